/** The HTTP media API suite (http-api.test.ts) again, through the edge and two media worker processes. */
process.env.TEST_EDGE_WORKERS = '2';
await import('./http-api.test.ts');
