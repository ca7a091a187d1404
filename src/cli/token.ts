/**
 * Mints an access token with the configured API key and secret:
 *   npm run token -- --room R --identity I [--name N] [--grants publish,subscribe] [--ttl 3600]
 * The lifetime defaults to 6 h and may not exceed SCV_MAX_TOKEN_LIFETIME.
 */
import { parseArgs } from 'node:util';
import { GRANTS, type Grant, TokenService } from '../auth/tokens.ts';
import { ConfigError, loadConfig } from '../config.ts';

function main(): void {
  const { values } = parseArgs({
    options: {
      room: { type: 'string' },
      identity: { type: 'string' },
      name: { type: 'string' },
      grants: { type: 'string', default: 'publish,subscribe' },
      ttl: { type: 'string' },
    },
  });
  if (values.identity === undefined) throw new ConfigError('--identity is required');
  const grants = values.grants.split(',').filter((g) => g.length > 0);
  for (const g of grants) {
    if (!(GRANTS as readonly string[]).includes(g)) throw new ConfigError(`unknown grant "${g}" (known: ${GRANTS.join(', ')})`);
  }
  if (values.room === undefined && !grants.includes('admin')) throw new ConfigError('--room is required unless the token has the admin grant');
  const ttl = values.ttl === undefined ? undefined : Number(values.ttl);
  if (ttl !== undefined && (!Number.isInteger(ttl) || ttl <= 0)) throw new ConfigError('--ttl must be a positive number of seconds');
  const cfg = loadConfig(process.env);
  const maxLifetime = cfg.auth.tokenLimits.maxLifetimeSeconds;
  if (ttl !== undefined && ttl > maxLifetime) throw new ConfigError(`--ttl may not exceed SCV_MAX_TOKEN_LIFETIME (${maxLifetime} s)`);
  if (cfg.auth.development) {
    throw new ConfigError('set SCV_API_KEY and SCV_API_SECRET (the development key is random per server start; use GET /dev/token instead)');
  }
  const tokens = new TokenService(cfg.auth.apiKey, cfg.auth.apiSecret, cfg.auth.tokenLimits);
  tokens
    .mint({ identity: values.identity, room: values.room, name: values.name, grants: grants as Grant[], ttlSeconds: ttl })
    .then((t) => process.stdout.write(`${t}\n`))
    .catch((err: unknown) => {
      // A name longer than the server accepts, a lifetime over the maximum.
      process.stderr.write(`token: ${(err as Error).message}\n`);
      process.exit(2);
    });
}

try {
  main();
} catch (err) {
  process.stderr.write(`token: ${(err as Error).message}\n`);
  process.exit(2);
}
