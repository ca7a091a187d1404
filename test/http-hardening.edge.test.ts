/** The HTTP hardening suite (http-hardening.test.ts) again, through the edge and two media worker processes. */
process.env.TEST_EDGE_WORKERS = '2';
await import('./http-hardening.test.ts');
