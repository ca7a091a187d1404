/** The GStreamer WHIP interop suite (gstreamer-whip.test.ts) again, through the edge and two media worker processes. */
process.env.TEST_EDGE_WORKERS = '2';
await import('./gstreamer-whip.test.ts');
