import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { SignJWT } from 'jose';
import { TokenService } from '../src/auth/tokens.ts';
import { AppError } from '../src/common/errors.ts';

const SECRET = 'a'.repeat(40);

async function rejects(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof AppError && err.code === code);
}

test('a minted token verifies with its room, identity and grants', async () => {
  const tokens = new TokenService('key1', SECRET);
  const t = await tokens.verify(await tokens.mint({ identity: 'alice', room: 'r', name: 'Alice', grants: ['publish', 'record'] }));
  assert.equal(t.identity, 'alice');
  assert.equal(t.room, 'r');
  assert.equal(t.name, 'Alice');
  assert.deepEqual([...t.grants].sort(), ['publish', 'record']);
});

test('forged, foreign, malformed, missing and expired tokens are refused with their codes', async () => {
  const tokens = new TokenService('key1', SECRET);
  await rejects(tokens.verify(await new TokenService('key1', 'b'.repeat(40)).mint({ identity: 'x', room: 'r' })), 'UNAUTHORIZED');
  await rejects(tokens.verify(await new TokenService('other', SECRET).mint({ identity: 'x', room: 'r' })), 'UNAUTHORIZED');
  await rejects(tokens.verify('not.a.jwt'), 'UNAUTHORIZED');
  await rejects(tokens.verify(undefined), 'UNAUTHORIZED');
  const expired = await new SignJWT({ room: 'r', grants: [] })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer('key1')
    .setSubject('x')
    .setExpirationTime(Math.floor(Date.now() / 1000) - 10)
    .sign(new TextEncoder().encode(SECRET));
  await rejects(tokens.verify(expired), 'TOKEN_EXPIRED');
  const badClaims = await new SignJWT({ room: 'r', grants: ['superuser'] })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer('key1')
    .setSubject('x')
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(SECRET));
  await rejects(tokens.verify(badClaims), 'UNAUTHORIZED');
});

test('npm run token mints a token the server accepts', async () => {
  const env = { ...process.env, SCV_API_KEY: 'cli-key', SCV_API_SECRET: SECRET };
  const r = spawnSync(process.execPath, ['src/cli/token.ts', '--room', 'standup', '--identity', 'bob', '--grants', 'subscribe'], { env, encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  const t = await new TokenService('cli-key', SECRET).verify(r.stdout.trim());
  assert.equal(t.room, 'standup');
  assert.equal(t.identity, 'bob');
  assert.deepEqual([...t.grants], ['subscribe']);
  const bad = spawnSync(process.execPath, ['src/cli/token.ts', '--room', 'r', '--identity', 'x', '--grants', 'root'], { env, encoding: 'utf8', timeout: 20_000 });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown grant "root"/);
});

/** A token signed with SECRET for issuer key1 carrying exactly `clock` (seconds from now; absent ones are left out). */
async function rawToken(clock: { exp?: number; iat?: number; nbf?: number }): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ room: 'r', grants: ['subscribe'] }).setProtectedHeader({ alg: 'HS256' }).setIssuer('key1').setSubject('x');
  if (clock.exp !== undefined) jwt.setExpirationTime(now + clock.exp);
  if (clock.iat !== undefined) jwt.setIssuedAt(now + clock.iat);
  if (clock.nbf !== undefined) jwt.setNotBefore(now + clock.nbf);
  return jwt.sign(new TextEncoder().encode(SECRET));
}

test('tokens must expire, within the maximum lifetime; iat and nbf get the clock skew, exp does not', async () => {
  const tokens = new TokenService('key1', SECRET, { maxLifetimeSeconds: 3600, clockSkewSeconds: 30 });
  const refused = async (clock: Parameters<typeof rawToken>[0], code: string, message: RegExp) => {
    await assert.rejects(tokens.verify(await rawToken(clock)), (err: unknown) => {
      assert.ok(err instanceof AppError, String(err));
      assert.equal(err.code, code, `${JSON.stringify(clock)}: ${err.message}`);
      assert.match(err.message, message);
      return true;
    });
  };
  await refused({}, 'UNAUTHORIZED', /"exp"/);
  await refused({ iat: 0 }, 'UNAUTHORIZED', /"exp"/);
  await refused({ exp: 7200, iat: 0 }, 'UNAUTHORIZED', /lifetime exceeds the maximum of 3600 s/);
  await refused({ exp: 7200 }, 'UNAUTHORIZED', /lifetime/);
  // Issued 50 minutes ago for 70 minutes: not expired, but a longer lifetime than allowed.
  await refused({ exp: 1200, iat: -3000 }, 'UNAUTHORIZED', /lifetime/);
  await refused({ exp: 600, iat: 120 }, 'TOKEN_NOT_YET_VALID', /iat/);
  await refused({ exp: 600, iat: 0, nbf: 120 }, 'TOKEN_NOT_YET_VALID', /nbf/);
  await refused({ exp: -5, iat: -60 }, 'TOKEN_EXPIRED', /expired/);
  // Within the skew: a token minted by a clock 20 s ahead still works.
  for (const clock of [{ exp: 600, iat: 20 }, { exp: 600, iat: 0, nbf: 20 }, { exp: 3600 + 20, iat: 20 }, { exp: 3600 }]) {
    assert.equal((await tokens.verify(await rawToken(clock))).identity, 'x', JSON.stringify(clock));
  }
});

test('minting never makes a token its service would refuse', async () => {
  const tokens = new TokenService('key1', SECRET, { maxLifetimeSeconds: 600, clockSkewSeconds: 0 });
  // The default lifetime (6 h) is capped at the maximum.
  assert.equal((await tokens.verify(await tokens.mint({ identity: 'x', room: 'r' }))).identity, 'x');
  await rejects(tokens.mint({ identity: 'x', room: 'r', ttlSeconds: 601 }), 'VALIDATION_FAILED');
  assert.equal((await tokens.verify(await tokens.mint({ identity: 'x', room: 'r', ttlSeconds: 600 }))).identity, 'x');
});

test('npm run token keeps --ttl within SCV_MAX_TOKEN_LIFETIME', async () => {
  const env = { ...process.env, SCV_API_KEY: 'cli-key', SCV_API_SECRET: SECRET, SCV_MAX_TOKEN_LIFETIME: '3600' };
  const tooLong = spawnSync(process.execPath, ['src/cli/token.ts', '--room', 'r', '--identity', 'x', '--ttl', '7200'], { env, encoding: 'utf8', timeout: 20_000 });
  assert.equal(tooLong.status, 2);
  assert.match(tooLong.stderr, /SCV_MAX_TOKEN_LIFETIME \(3600 s\)/);
  const byDefault = spawnSync(process.execPath, ['src/cli/token.ts', '--room', 'r', '--identity', 'x'], { env, encoding: 'utf8', timeout: 20_000 });
  assert.equal(byDefault.status, 0, byDefault.stderr);
  const tokens = new TokenService('cli-key', SECRET, { maxLifetimeSeconds: 3600, clockSkewSeconds: 30 });
  assert.equal((await tokens.verify(byDefault.stdout.trim())).identity, 'x');
});
