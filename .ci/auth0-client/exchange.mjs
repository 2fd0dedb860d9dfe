// Exchanges sandbox codes through the proxy the way Auth0 does: with passport-oauth2's
// strategy and the node-oauth client under it, then checks how errors would surface in
// Auth0's logs.
//
//   node exchange.mjs http://localhost:8080 http://localhost:9400
import { createHash, randomBytes } from 'node:crypto';
import OAuth2Strategy from 'passport-oauth2';

const [proxy, sandbox] = process.argv.slice(2);
const clientID = 'sandbox-client-key';
const clientSecret = 'sandbox-client-secret';
const callbackURL = 'https://sandbox.auth0.example/login/callback';

const strategy = new OAuth2Strategy(
  {
    authorizationURL: `${sandbox}/v2/auth/authorize/`,
    tokenURL: `${proxy}/token`,
    clientID,
    clientSecret,
    callbackURL,
  },
  () => {},
);
const client = strategy._oauth2;

async function mintCode(challenge) {
  const form = new URLSearchParams({ redirect_uri: callbackURL, scope: 'user.info.basic' });
  if (challenge) form.set('code_challenge', challenge);
  const response = await fetch(`${sandbox}/sandbox/codes`, { method: 'POST', body: form });
  if (!response.ok) throw new Error(`cannot mint a code: ${response.status}`);
  return (await response.json()).code;
}

// node-oauth's call, as passport-oauth2 makes it for Auth0; failures become the error
// passport-oauth2 builds, which is what Auth0 logs.
function getToken(oauth, code, params) {
  return new Promise((resolve) => {
    oauth.getOAuthAccessToken(code, params, (err, accessToken, refreshToken, results) => {
      if (err) {
        resolve({ error: strategy._createOAuthError('Failed to obtain access token', err), raw: err });
      } else {
        resolve({ accessToken, refreshToken, results });
      }
    });
  });
}

let passed = 0;
let failed = 0;
function check(name, condition, detail) {
  if (condition) {
    passed += 1;
    console.log(`ok   ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL ${name}: ${JSON.stringify(detail)}`);
  }
}

const verifier = randomBytes(32).toString('base64url');
const challenge = createHash('sha256').update(verifier).digest('hex');
const code = await mintCode(challenge);
const issued = await getToken(client, code, {
  grant_type: 'authorization_code',
  redirect_uri: callbackURL,
  code_verifier: verifier,
});
check('a code with PKCE is exchanged', issued.accessToken?.startsWith('act.'), issued);
check('the refresh token is returned', issued.refreshToken?.startsWith('rft.'), issued);
check('the whole token object reaches the profile script', issued.results?.open_id, issued);

const refreshed = await getToken(client, issued.refreshToken, { grant_type: 'refresh_token' });
check('a refresh token is exchanged', refreshed.accessToken?.startsWith('act.'), refreshed);
check('the refresh token is rotated', refreshed.refreshToken && refreshed.refreshToken !== issued.refreshToken, refreshed);

const reused = await getToken(client, code, {
  grant_type: 'authorization_code',
  redirect_uri: callbackURL,
  code_verifier: verifier,
});
check('a reused code fails with a non-2xx status', reused.raw?.statusCode === 400, reused);
check('Auth0 would log invalid_grant', reused.error?.code === 'invalid_grant', reused.error);
check('Auth0 would log TikTok\'s reason', Boolean(reused.error?.message) && reused.error.message !== 'Failed to obtain access token', reused.error?.message);

const { OAuth2 } = await import('oauth').then((module) => module.default ?? module);
const wrongSecret = new OAuth2(clientID, 'not-the-secret', '', `${sandbox}/v2/auth/authorize/`, `${proxy}/token`);
const refused = await getToken(wrongSecret, await mintCode(), {
  grant_type: 'authorization_code',
  redirect_uri: callbackURL,
});
check('a wrong secret is refused with 401', refused.raw?.statusCode === 401, refused);
check('Auth0 would log invalid_client', refused.error?.code === 'invalid_client', refused.error);

console.log(`auth0-client: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
