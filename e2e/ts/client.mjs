// End-to-end client built on the official TypeScript MCP SDK. It connects to the
// gateway at argv[2] with no credentials, lets the SDK run the whole OAuth flow
// (401 -> protected resource metadata -> authorization server metadata -> dynamic
// client registration -> PKCE authorization -> token), then lists tools and calls
// who_am_i and list_my_orgs. The authorization step is headless: it plays the browser, following
// redirects with a cookie jar and filling devauth's login form (E2E_EMAIL,
// E2E_PASSWORD; alice by default) and consent form, or just following the redirect
// when devauth auto-approves.
//
// It prints one JSON object on stdout and exits 0, or prints the error and exits 1.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';

import { HeadlessProvider, connect } from './oauth.mjs';

const serverUrl = new URL(process.argv[2] ?? 'http://localhost:8000/mcp');

async function main() {
  const provider = new HeadlessProvider();
  const client = new Client({ name: 'mcpauthz-e2e-ts', version: '1.0.0' });
  await connect(client, serverUrl, provider);
  const tools = await client.listTools();
  const whoAmI = await client.callTool({ name: 'who_am_i', arguments: {} });
  const myOrgs = await client.callTool({ name: 'list_my_orgs', arguments: {} });
  console.log(JSON.stringify({
    events: provider.events,
    issuer: provider.issuer,
    requested_scope: provider.requestedScope,
    requested_resource: provider.requestedResource,
    tools: tools.tools.map((t) => t.name).sort(),
    who_am_i: whoAmI.structuredContent ?? null,
    is_error: whoAmI.isError ?? false,
    list_my_orgs: myOrgs.structuredContent ?? null,
    list_my_orgs_is_error: myOrgs.isError ?? false,
  }));
  await client.close();
}

main().catch((err) => {
  console.error(err?.stack ?? String(err));
  process.exit(1);
});
