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
