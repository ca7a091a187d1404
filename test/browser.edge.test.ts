/** The browser suite (browser.test.ts) again, through the edge and two media worker processes, as `npm start` runs. */
process.env.TEST_EDGE_WORKERS = '2';
await import('./browser.test.ts');
