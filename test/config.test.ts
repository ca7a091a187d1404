import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { iceServersFor } from '../src/auth/ice-servers.ts';
import { createHmac } from 'node:crypto';
import { ConfigError, loadConfig } from '../src/config.ts';

test('defaults: one node on localhost with a development key', () => {
  const c = loadConfig({});
  assert.equal(c.http.host, '127.0.0.1');
  assert.equal(c.http.port, 7880);
  assert.equal(c.auth.development, true);
  assert.ok(c.auth.apiSecret.length >= 32);
  assert.deepEqual(c.rtc.codecs, ['opus', 'vp8', 'vp9', 'h264']);
});

test('a draining cluster node gets SCV_DRAIN_TIMEOUT seconds, 30 unless set', () => {
  assert.equal(loadConfig({}).drainTimeoutMs, 30_000);
  assert.equal(loadConfig({ SCV_DRAIN_TIMEOUT: '2.5' }).drainTimeoutMs, 2500);
});

test('flags override environment variables', () => {
  const c = loadConfig({ SCV_HTTP_PORT: '1000', SCV_LOG_LEVEL: 'warn' }, ['--http-port', '2000', '--codecs=opus,vp8']);
  assert.equal(c.http.port, 2000);
  assert.equal(c.logLevel, 'warn');
  assert.deepEqual(c.rtc.codecs, ['opus', 'vp8']);
});

test('bad values name the setting', () => {
  const cases: [Record<string, string>, string[], RegExp][] = [
    [{ SCV_HTTP_PORT: 'abc' }, [], /SCV_HTTP_PORT/],
    [{ SCV_HTTP_PORT: '70000' }, [], /SCV_HTTP_PORT/],
    [{ SCV_CODECS: 'vp8' }, [], /SCV_CODECS.*opus/],
    [{ SCV_CODECS: 'opus,av1' }, [], /SCV_CODECS/],
    [{ SCV_API_KEY: 'k' }, [], /SCV_API_SECRET/],
    [{ SCV_API_KEY: 'k', SCV_API_SECRET: 'short' }, [], /SCV_API_SECRET.*32/],
    [{ SCV_RTC_PORT_MIN: '50000' }, [], /SCV_RTC_PORT_MAX/],
    [{ SCV_RTC_PORT_MIN: '50000', SCV_RTC_PORT_MAX: '40000' }, [], /SCV_RTC_PORT_MIN/],
    [{ SCV_ANNOUNCED_IP: 'not-an-ip' }, [], /SCV_ANNOUNCED_IP/],
    [{ SCV_LOG_LEVEL: 'loud' }, [], /SCV_LOG_LEVEL/],
    [{ SCV_DRAIN_TIMEOUT: '0' }, [], /SCV_DRAIN_TIMEOUT/],
    [{ SCV_DRAIN_TIMEOUT: '3601' }, [], /SCV_DRAIN_TIMEOUT/],
    [{ SCV_NO_SUCH_THING: '1' }, [], /unknown setting SCV_NO_SUCH_THING/],
    [{}, ['--http-port'], /--http-port needs a value/],
    [{}, ['stray'], /unexpected argument/],
  ];
  for (const [env, argv, re] of cases) {
    assert.throws(() => loadConfig(env, argv), (err: unknown) => err instanceof ConfigError && re.test(err.message), `${JSON.stringify(env)} ${argv.join(' ')}`);
  }
});

test('the service refuses to start on a bad value and says which', () => {
  const r = spawnSync(process.execPath, ['src/main.ts'], { env: { ...process.env, SCV_HTTP_PORT: 'seven' }, encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /SCV_HTTP_PORT/);
});

test('TURN REST credentials follow coturn use-auth-secret', () => {
  const cfg = loadConfig({ SCV_TURN_URLS: 'turn:turn.example.com:3478', SCV_TURN_SECRET: 'sharedsecret', SCV_TURN_TTL_SECONDS: '600', SCV_STUN_URLS: 'stun:stun.example.com:3478' });
  const servers = iceServersFor(cfg.ice, 'alice', 1_700_000_000_000);
  assert.deepEqual(servers[0], { urls: ['stun:stun.example.com:3478'] });
  const turn = servers[1]!;
  assert.equal(turn.username, `${1_700_000_000 + 600}:alice`);
  assert.equal(turn.credential, createHmac('sha1', 'sharedsecret').update(turn.username!).digest('base64'));
});

test('static TURN credentials are handed out as configured', () => {
  const cfg = loadConfig({ SCV_TURN_URLS: 'turn:t:3478', SCV_TURN_USERNAME: 'u', SCV_TURN_CREDENTIAL: 'p' });
  assert.deepEqual(iceServersFor(cfg.ice, 'x'), [{ urls: ['turn:t:3478'], username: 'u', credential: 'p' }]);
});
