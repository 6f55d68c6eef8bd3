// The headless OAuth provider of the TypeScript SDK e2e clients (client.mjs,
// federation.mjs): it plays the browser in the authorization step, following
// redirects with a cookie jar and filling devauth's login form (E2E_EMAIL,
// E2E_PASSWORD; alice by default) and consent form, or just following the
// redirect when devauth auto-approves.

import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const redirectUrl = 'http://127.0.0.1:53682/callback';

export class HeadlessProvider {
  constructor() {
    this.events = [];
    this.authorizationCode = undefined;
    this.issuer = undefined;
  }
  get redirectUrl() { return redirectUrl; }
  get clientMetadata() {
    return {
      client_name: 'mcpauthz e2e (TypeScript SDK)',
      redirect_uris: [redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  clientInformation() { return this._client; }
  saveClientInformation(info) { this.events.push('registered'); this._client = info; }
  tokens() { return this._tokens; }
  saveTokens(tokens) { this.events.push('tokens'); this._tokens = tokens; }
  forgetTokens() { this._tokens = undefined; }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() { return this._verifier; }
  async redirectToAuthorization(authorizationUrl) {
    this.events.push('authorize');
    // E2E_FIRST_SCOPE: the first authorization asks for that scope only, as
    // when a user grants less than asked at the first consent; later ones
    // (the 403 step-up) ask for what the server names.
    if (process.env.E2E_FIRST_SCOPE && !this._narrowed) {
      this._narrowed = true;
      authorizationUrl.searchParams.set('scope', process.env.E2E_FIRST_SCOPE);
    }
    this.requestedScope = authorizationUrl.searchParams.get('scope');
    this.requestedResource = authorizationUrl.searchParams.get('resource');
    const cookies = new Map();
    const request = async (url, init = {}) => {
      const headers = { ...(init.headers ?? {}) };
      if (cookies.size > 0) {
        headers.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
      }
      const res = await fetch(url, { ...init, headers, redirect: 'manual' });
      for (const c of res.headers.getSetCookie()) {
        const [pair] = c.split(';');
        const eq = pair.indexOf('=');
        cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
      }
      return res;
    };
    // Like a browser: follow redirects, and fill in the login and consent forms
    // when the authorization server shows them.
    let res = await request(authorizationUrl);
    let current = authorizationUrl;
    for (let step = 0; step < 8; step++) {
      const location = res.headers.get('location');
      if (location) {
        const target = new URL(location, current);
        if (target.href.startsWith(redirectUrl)) {
          if (target.searchParams.get('error')) {
            throw new Error(`authorization failed: ${target.searchParams.get('error')}: ${target.searchParams.get('error_description')}`);
          }
          this.authorizationCode = target.searchParams.get('code');
          this.issuer = target.searchParams.get('iss');
          return;
        }
        current = target;
        res = await request(target);
        continue;
      }
      if (res.status !== 200) {
        throw new Error(`authorization answered ${res.status}: ${await res.text()}`);
      }
      const page = await res.text();
      const form = parseForm(page, current);
      if (form.fields.action === 'login') {
        this.events.push('login');
        form.fields.email = process.env.E2E_EMAIL ?? 'alice@example.com';
        form.fields.password = process.env.E2E_PASSWORD ?? 'alice-password';
      } else if (/name="action" value="approve"/.test(page)) {
        this.events.push('consent');
        form.fields.action = 'approve';
      } else {
        throw new Error(`unexpected authorization page: ${page.slice(0, 500)}`);
      }
      current = form.action;
      res = await request(form.action, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(form.fields).toString(),
      });
    }
    throw new Error('authorization did not finish within 8 steps');
  }
}

// parseForm reads the first form's action and hidden inputs from an HTML page.
function parseForm(html, base) {
  const formTag = html.match(/<form[^>]*action="([^"]*)"/);
  if (!formTag) throw new Error('no form on the authorization page');
  const fields = {};
  for (const m of html.matchAll(/<input[^>]*type="hidden"[^>]*>/g)) {
    const name = m[0].match(/name="([^"]*)"/);
    const value = m[0].match(/value="([^"]*)"/);
    if (name) fields[name[1]] = decodeEntities(value ? value[1] : '');
  }
  return { action: new URL(decodeEntities(formTag[1]), base), fields };
}

function decodeEntities(s) {
  return s.replace(/&amp;/g, '&').replace(/&#43;/g, '+').replace(/&#34;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>');
}

// connect runs the SDK's whole OAuth flow against the MCP server at serverUrl
// (401 -> metadata -> registration -> PKCE authorization -> token), leaves
// client connected and returns the transport it is connected through.
export async function connect(client, serverUrl, provider) {
  let transport = new StreamableHTTPClientTransport(serverUrl, { authProvider: provider });
  try {
    await client.connect(transport);
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
    transport = new StreamableHTTPClientTransport(serverUrl, { authProvider: provider });
    await transport.finishAuth(provider.authorizationCode);
    await client.connect(transport);
  }
  return transport;
}

// withStepUp runs call and, when the server refuses it with 403
// insufficient_scope, authorizes again for more scope and runs it once more,
// as an application does after the user's new consent. The SDK (1.32) meets
// the 403 by refreshing the token, which cannot widen the grant (RFC 6749
// section 6), and gives up with a 403 error; the provider then forgets its
// tokens, so the next attempt's 401 starts a new authorization (the provider
// plays the browser) and the SDK throws UnauthorizedError: the code is
// exchanged and the call runs again.
export async function withStepUp(transport, provider, call) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (attempt >= 2) throw err;
      if (err instanceof StreamableHTTPError && err.code === 403) {
        provider.events.push('403');
        provider.forgetTokens();
      } else if (err instanceof UnauthorizedError) {
        await transport.finishAuth(provider.authorizationCode);
      } else {
        throw err;
      }
    }
  }
}
