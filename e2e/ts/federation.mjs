// End-to-end check of upstream federation with the official TypeScript MCP SDK
// client: it logs in to the gateway at argv[2] through the whole OAuth flow
// (oauth.mjs), then uses an upstream's catalog through the gateway: tools,
// resources and prompts of the upstream whose names start with argv[3] (the
// upstream's prefix, e.g. "everything_") are listed; echo is called; the
// long-running tool is called with a progress handler; the first resource is
// read, and a URI of its first resource template; simple-prompt is fetched; and an argument of completable-prompt is
// completed. With E2E_FIRST_SCOPE set, the first login grants only that scope:
// a tool needing more is left out of tools/list, and calling it goes through
// the 403 step-up (withStepUp); the tools are listed again after it.
//
// It prints one JSON object on stdout and exits 0, or prints the error and exits 1.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { CallToolResultSchema } from '@modelcontextprotocol/sdk/types.js';

import { HeadlessProvider, connect, withStepUp } from './oauth.mjs';

const serverUrl = new URL(process.argv[2] ?? 'http://localhost:8000/mcp');
const prefix = process.argv[3] ?? 'everything_';

// all returns every item of a paginated list.
async function all(list, key) {
  const items = [];
  let cursor;
  do {
    const page = await list(cursor ? { cursor } : undefined);
    items.push(...page[key]);
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}

function text(content) {
  return (content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
}

async function main() {
  const provider = new HeadlessProvider();
  const client = new Client({ name: 'mcpauthz-e2e-ts-federation', version: '1.0.0' });
  const transport = await connect(client, serverUrl, provider);

  const tools = await all((p) => client.listTools(p), 'tools');
  const resources = await all((p) => client.listResources(p), 'resources');
  const templates = await all((p) => client.listResourceTemplates(p), 'resourceTemplates');
  const prompts = await all((p) => client.listPrompts(p), 'prompts');

  const echo = await client.callTool({ name: `${prefix}echo`, arguments: { message: 'through the gateway' } });

  // The SDK sends a progressToken when onprogress is set; the notifications
  // must arrive on this request's stream, before the result.
  // With E2E_FIRST_SCOPE narrower than the tool needs, it is not listed
  // above and its call meets the 403 step-up first.
  const progress = [];
  const longRun = await withStepUp(transport, provider, () => client.callTool(
    { name: `${prefix}trigger-long-running-operation`, arguments: { duration: 1, steps: 3 } },
    CallToolResultSchema,
    { onprogress: (p) => progress.push({ progress: p.progress, total: p.total }), timeout: 30_000 },
  ));
  const toolsAfter = await all((p) => client.listTools(p), 'tools');

  const firstResource = resources[0];
  const read = firstResource ? await client.readResource({ uri: firstResource.uri }) : null;

  // A URI no list names, which only a template of the upstream matches.
  const template = templates[0]?.uriTemplate;
  const templated = template ? template.replace(/\{[^}]+\}/g, '1') : null;
  const readTemplated = templated ? await client.readResource({ uri: templated }) : null;

  const prompt = await client.getPrompt({ name: `${prefix}simple-prompt`, arguments: {} });

  let completion = null;
  const completable = prompts.find((p) => p.name === `${prefix}completable-prompt`);
  if (completable?.arguments?.length) {
    const arg = completable.arguments[0].name;
    const res = await client.complete({ ref: { type: 'ref/prompt', name: completable.name }, argument: { name: arg, value: '' } });
    completion = { argument: arg, values: res.completion.values };
  }

  console.log(JSON.stringify({
    events: provider.events,
    last_requested_scope: provider.requestedScope,
    tools: tools.map((t) => t.name).sort(),
    tools_after_step_up: toolsAfter.map((t) => t.name).sort(),
    resources: resources.length,
    resource_templates: templates.map((t) => t.uriTemplate),
    prompts: prompts.map((p) => p.name).sort(),
    echo: { text: text(echo.content), is_error: echo.isError ?? false },
    long_run: { text: text(longRun.content), is_error: longRun.isError ?? false, progress },
    read: read ? { uri: firstResource.uri, contents: read.contents.map((c) => ({ uri: c.uri, has_text: typeof c.text === 'string', has_blob: typeof c.blob === 'string' })) } : null,
    read_templated: readTemplated ? { uri: templated, contents: readTemplated.contents.map((c) => c.uri) } : null,
    prompt: { messages: prompt.messages.length, text: prompt.messages.map((m) => m.content?.text ?? '').join('\n') },
    completion,
  }));
  await client.close();
}

main().catch((err) => {
  console.error(err?.stack ?? String(err));
  process.exit(1);
});
