/** The WHEP limits suite (whep-limits.test.ts) again, through the edge and a media worker process. */
process.env.TEST_EDGE_WORKERS = '1';
await import('./whep-limits.test.ts');
