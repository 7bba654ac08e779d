#!/usr/bin/env node
// The MCP server that @modelcontextprotocol/conformance's `server` scenarios
// expect (its own fixture, examples/servers/typescript/everything-server.ts
// in the conformance repository, is not published on npm). Written with the
// official TypeScript SDK (McpServer + StreamableHTTPServerTransport), so
// that e2e/python/test_mcp_conformance_fixture.py can run every scenario
// against it directly and through the gateway.
//
// - Streamable HTTP at http://127.0.0.1:$PORT/mcp (PORT 0 or unset: any free
//   port), one McpServer and transport per session: POST initialize without
//   Mcp-Session-Id opens a session; an unknown session id answers 404, a
//   missing one 400. GET (standalone SSE stream) and DELETE go to the
//   session's transport.
// - Resumability: every SSE event is stored in an in-memory event store, so a
//   client can resume a stream with GET + Last-Event-ID.
// - DNS rebinding protection: the SDK's localhost Host-header check (403 for
//   any Host other than localhost, 127.0.0.1 or [::1]).
// - Prints `conformance-server listening on 127.0.0.1:<port>` on stdout once it
//   accepts connections; SIGTERM or SIGINT closes every session and exits 0.
//
// Its imports resolve from a node_modules folder beside or above this file
// (ES modules ignore NODE_PATH). By hand:
//   dir=$(source e2e/lib.sh && ensure_mcp_node_modules)
//   cp e2e/mcp/conformance-server.mjs "$dir/" && PORT=3000 node "$dir/conformance-server.mjs"
//   node "$dir/node_modules/.bin/conformance" server --url http://127.0.0.1:3000/mcp

import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { completable } from '@modelcontextprotocol/sdk/server/completable.js';
import {
  CreateMessageResultSchema,
  ElicitResultSchema,
  ListToolsRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
  isInitializeRequest,
} from '@modelcontextprotocol/sdk/types.js';
import * as z from 'zod';

const HOST = '127.0.0.1';
const NAME = 'sluice-conformance-fixture';

// A 1x1 red PNG and a 1 ms 8 kHz 8-bit mono WAV of silence.
const PNG_BASE64 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC';
const WAV_BASE64 = 'UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA==';

const WATCHED_URI = 'test://watched-resource';
// While a session is subscribed to WATCHED_URI, its content changes (and the
// session is sent notifications/resources/updated) this often.
const WATCHED_UPDATE_MS = 2000;

// json-schema-2020-12 (SEP-1613): this exact inputSchema must reach the client.
const JSON_SCHEMA_2020_12_TOOL = 'json_schema_2020_12_tool';
const JSON_SCHEMA_2020_12 = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  $defs: {
    address: {
      type: 'object',
      properties: { street: { type: 'string' }, city: { type: 'string' } },
    },
  },
  properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
  additionalProperties: false,
};

const text = (t) => ({ type: 'text', text: t });
const textResult = (t) => ({ content: [text(t)] });
const errorResult = (t) => ({ content: [text(t)], isError: true });

// --------------------------------------------------------------------------
// Resumability

/** Every SSE event of every session, in order; ids are `<stream>_<seq>`. */
class EventStore {
  #events = new Map(); // id -> {streamId, message}, in insertion order
  #seq = 0;

  async storeEvent(streamId, message) {
    const id = `${streamId}_${String(++this.#seq).padStart(10, '0')}`;
    this.#events.set(id, { streamId, message });
    return id;
  }

  async getStreamIdForEventId(eventId) {
    return this.#events.get(eventId)?.streamId;
  }

  async replayEventsAfter(lastEventId, { send }) {
    const last = this.#events.get(lastEventId);
    if (!last) return '';
    let after = false;
    for (const [id, { streamId, message }] of this.#events) {
      if (id === lastEventId) after = true;
      // Priming events store `{}`: nothing to replay.
      else if (after && streamId === last.streamId && Object.keys(message).length > 0) await send(id, message);
    }
    return last.streamId;
  }
}

// --------------------------------------------------------------------------
// One session's server

/** session id -> {transport, mcp, subscriptions, timer} */
const sessions = new Map();

function createServer(state) {
  const mcp = new McpServer(
    { name: NAME, version: '1.0.0' },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
    },
  );
  const server = mcp.server;

  // A log message related to the request being handled (it travels on that
  // request's SSE stream), unless the session's logging/setLevel filters it.
  async function log(extra, level, data) {
    if (server.isMessageIgnored?.(level, extra.sessionId)) return;
    await extra.sendNotification({ method: 'notifications/message', params: { level, logger: NAME, data } });
  }

  // ---- tools

  mcp.registerTool(
    'test_simple_text',
    { description: 'Returns one text content item' },
    async () => textResult('This is a simple text response for testing.'),
  );
  mcp.registerTool(
    'test_image_content',
    { description: 'Returns one image content item (a 1x1 PNG)' },
    async () => ({ content: [{ type: 'image', data: PNG_BASE64, mimeType: 'image/png' }] }),
  );
  mcp.registerTool(
    'test_audio_content',
    { description: 'Returns one audio content item (a short WAV)' },
    async () => ({ content: [{ type: 'audio', data: WAV_BASE64, mimeType: 'audio/wav' }] }),
  );
  mcp.registerTool(
    'test_embedded_resource',
    { description: 'Returns one embedded text resource' },
    async () => ({
      content: [
        {
          type: 'resource',
          resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' },
        },
      ],
    }),
  );
  mcp.registerTool(
    'test_multiple_content_types',
    { description: 'Returns text, image and embedded resource content' },
    async () => ({
      content: [
        text('Multiple content types test:'),
        { type: 'image', data: PNG_BASE64, mimeType: 'image/png' },
        {
          type: 'resource',
          resource: {
            uri: 'test://mixed-content-resource',
            mimeType: 'application/json',
            text: JSON.stringify({ test: 'data', value: 123 }),
          },
        },
      ],
    }),
  );
  mcp.registerTool(
    'test_tool_with_logging',
    { description: 'Sends three info log messages while it runs', inputSchema: {} },
    async (_args, extra) => {
      await log(extra, 'info', 'Tool execution started');
      await sleep(50);
      await log(extra, 'info', 'Tool processing data');
      await sleep(50);
      await log(extra, 'info', 'Tool execution completed');
      return textResult('Tool with logging executed successfully');
    },
  );
  mcp.registerTool(
    'test_tool_with_progress',
    { description: 'Reports progress 0, 50 and 100 of 100 when given a progress token', inputSchema: {} },
    async (_args, extra) => {
      const progressToken = extra._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (progress > 0) await sleep(50);
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken, progress, total: 100, message: `Completed step ${progress} of 100` },
          });
        }
      }
      return textResult(`Progress reported for token ${JSON.stringify(progressToken ?? null)}`);
    },
  );
  mcp.registerTool('test_error_handling', { description: 'Always fails (isError: true)' }, async () => {
    throw new Error('This tool intentionally returns an error for testing');
  });
  mcp.registerTool(
    'test_reconnection',
    {
      description:
        'Closes its SSE stream before answering, so the client must resume with Last-Event-ID (SEP-1699)',
      inputSchema: {},
    },
    async (_args, extra) => {
      // Only offered to clients of 2025-11-25 or later (they got a priming event).
      extra.closeSSEStream?.();
      await sleep(100);
      return textResult('Reconnection test completed successfully.');
    },
  );
  mcp.registerTool(
    'test_sampling',
    {
      description: 'Asks the client for an LLM completion (sampling/createMessage)',
      inputSchema: { prompt: z.string().describe('The prompt to send to the LLM') },
    },
    async ({ prompt }, extra) => {
      if (!server.getClientCapabilities()?.sampling) return errorResult('The client does not support sampling');
      const result = await extra.sendRequest(
        {
          method: 'sampling/createMessage',
          params: { messages: [{ role: 'user', content: text(prompt) }], maxTokens: 100 },
        },
        CreateMessageResultSchema,
      );
      const content = Array.isArray(result.content) ? result.content[0] : result.content;
      return textResult(`LLM response: ${content?.type === 'text' ? content.text : JSON.stringify(content)}`);
    },
  );

  // Elicitation tools: ask the client (elicitation/create, form mode) and
  // report its answer.
  function elicitationTool(name, description, inputSchema, request, resultPrefix) {
    mcp.registerTool(name, { description, inputSchema }, async (args, extra) => {
      if (!server.getClientCapabilities()?.elicitation) return errorResult('The client does not support elicitation');
      const answer = await extra.sendRequest(
        { method: 'elicitation/create', params: request(args) },
        ElicitResultSchema,
      );
      return textResult(`${resultPrefix}action=${answer.action}, content=${JSON.stringify(answer.content ?? {})}`);
    });
  }
  elicitationTool(
    'test_elicitation',
    'Asks the user for a username and an email address',
    { message: z.string().describe('The message to show the user') },
    ({ message }) => ({
      message,
      requestedSchema: {
        type: 'object',
        properties: {
          username: { type: 'string', description: "User's response" },
          email: { type: 'string', description: "User's email address" },
        },
        required: ['username', 'email'],
      },
    }),
    'User response: ',
  );
  elicitationTool(
    'test_elicitation_sep1034_defaults',
    'Asks for one field of each primitive type, each with a default (SEP-1034)',
    {},
    () => ({
      message: 'Please review the fields; each has a default',
      requestedSchema: {
        type: 'object',
        properties: {
          name: { type: 'string', description: 'User name', default: 'John Doe' },
          age: { type: 'integer', description: 'User age', default: 30 },
          score: { type: 'number', description: 'User score', default: 95.5 },
          status: {
            type: 'string',
            description: 'User status',
            enum: ['active', 'inactive', 'pending'],
            default: 'active',
          },
          verified: { type: 'boolean', description: 'Verification status', default: true },
        },
        required: [],
      },
    }),
    'Elicitation completed: ',
  );
  elicitationTool(
    'test_elicitation_sep1330_enums',
    'Asks for one field of each enum schema variant (SEP-1330)',
    {},
    () => ({
      message: 'Please pick options',
      requestedSchema: {
        type: 'object',
        properties: {
          untitledSingle: { type: 'string', description: 'Pick one', enum: ['option1', 'option2', 'option3'] },
          titledSingle: {
            type: 'string',
            description: 'Pick one (titled)',
            oneOf: [
              { const: 'value1', title: 'First Option' },
              { const: 'value2', title: 'Second Option' },
              { const: 'value3', title: 'Third Option' },
            ],
          },
          legacyEnum: {
            type: 'string',
            description: 'Pick one (legacy enumNames)',
            enum: ['opt1', 'opt2', 'opt3'],
            enumNames: ['Option One', 'Option Two', 'Option Three'],
          },
          untitledMulti: {
            type: 'array',
            description: 'Pick several',
            minItems: 1,
            maxItems: 3,
            items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
          },
          titledMulti: {
            type: 'array',
            description: 'Pick several (titled)',
            minItems: 1,
            maxItems: 3,
            items: {
              anyOf: [
                { const: 'value1', title: 'First Choice' },
                { const: 'value2', title: 'Second Choice' },
                { const: 'value3', title: 'Third Choice' },
              ],
            },
          },
        },
        required: [],
      },
    }),
    'Elicitation completed: ',
  );
  // Validated with this zod shape; listed with JSON_SCHEMA_2020_12 (below).
  mcp.registerTool(
    JSON_SCHEMA_2020_12_TOOL,
    {
      description: 'Has an inputSchema with JSON Schema 2020-12 keywords (SEP-1613)',
      inputSchema: {
        name: z.string().optional(),
        address: z.object({ street: z.string().optional(), city: z.string().optional() }).optional(),
      },
    },
    async (args) => textResult(`Called with ${JSON.stringify(args)}`),
  );
  // McpServer lists every tool's zod schema converted to JSON Schema draft 7,
  // which has no $defs; swap in the raw schema for that one tool. There is no
  // public hook for this, so the SDK's tools/list handler is wrapped.
  const listTools = server._requestHandlers?.get('tools/list');
  if (typeof listTools !== 'function') throw new Error('the SDK has no tools/list handler to wrap');
  server.setRequestHandler(ListToolsRequestSchema, async (request, extra) => {
    const result = await listTools(request, extra);
    for (const tool of result.tools) {
      if (tool.name === JSON_SCHEMA_2020_12_TOOL) tool.inputSchema = JSON_SCHEMA_2020_12;
    }
    return result;
  });

  // ---- resources

  mcp.registerResource(
    'static-text',
    'test://static-text',
    { title: 'Static text', description: 'A fixed text resource', mimeType: 'text/plain' },
    async (uri) => ({
      contents: [{ uri: uri.href, mimeType: 'text/plain', text: 'This is the content of the static text resource.' }],
    }),
  );
  mcp.registerResource(
    'static-binary',
    'test://static-binary',
    { title: 'Static binary', description: 'A fixed binary resource (a 1x1 PNG)', mimeType: 'image/png' },
    async (uri) => ({ contents: [{ uri: uri.href, mimeType: 'image/png', blob: PNG_BASE64 }] }),
  );
  mcp.registerResource(
    'watched-resource',
    WATCHED_URI,
    {
      title: 'Watched resource',
      description: `Changes every ${WATCHED_UPDATE_MS} ms while subscribed`,
      mimeType: 'text/plain',
    },
    async (uri) => ({
      contents: [{ uri: uri.href, mimeType: 'text/plain', text: `Watched resource content, version ${state.watchedVersion}` }],
    }),
  );
  mcp.registerResource(
    'template',
    new ResourceTemplate('test://template/{id}/data', {
      list: undefined,
      complete: { id: (value) => ['1', '12', '123', '42'].filter((id) => id.startsWith(value)) },
    }),
    { title: 'Template', description: 'Data for any id, which the content repeats', mimeType: 'application/json' },
    async (uri, { id }) => ({
      contents: [
        {
          uri: uri.href,
          mimeType: 'application/json',
          text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }),
        },
      ],
    }),
  );

  server.setRequestHandler(SubscribeRequestSchema, async ({ params }) => {
    state.subscriptions.add(params.uri);
    if (params.uri === WATCHED_URI && !state.timer) {
      state.timer = setInterval(() => {
        state.watchedVersion += 1;
        server.sendResourceUpdated({ uri: WATCHED_URI }).catch(() => {});
      }, WATCHED_UPDATE_MS);
      state.timer.unref();
    }
    return {};
  });
  server.setRequestHandler(UnsubscribeRequestSchema, async ({ params }) => {
    state.subscriptions.delete(params.uri);
    if (params.uri === WATCHED_URI) stopWatching(state);
    return {};
  });

  // ---- prompts (completion/complete offers values for arg1)

  mcp.registerPrompt(
    'test_simple_prompt',
    { title: 'Simple prompt', description: 'A prompt without arguments' },
    async () => ({ messages: [{ role: 'user', content: text('This is a simple prompt for testing.') }] }),
  );
  mcp.registerPrompt(
    'test_prompt_with_arguments',
    {
      title: 'Prompt with arguments',
      description: 'A prompt with two required arguments',
      argsSchema: {
        arg1: completable(z.string().describe('First test argument'), (value) =>
          ['test-alpha', 'test-beta', 'paris', 'park', 'party'].filter((v) => v.startsWith(value ?? '')),
        ),
        arg2: z.string().describe('Second test argument'),
      },
    },
    async ({ arg1, arg2 }) => ({
      messages: [{ role: 'user', content: text(`Prompt with arguments: arg1='${arg1}', arg2='${arg2}'`) }],
    }),
  );
  mcp.registerPrompt(
    'test_prompt_with_embedded_resource',
    {
      title: 'Prompt with an embedded resource',
      description: 'A prompt embedding the resource it is given',
      argsSchema: { resourceUri: z.string().describe('URI of the resource to embed') },
    },
    async ({ resourceUri }) => ({
      messages: [
        {
          role: 'user',
          content: {
            type: 'resource',
            resource: { uri: resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' },
          },
        },
        { role: 'user', content: text('Please process the embedded resource above.') },
      ],
    }),
  );
  mcp.registerPrompt(
    'test_prompt_with_image',
    { title: 'Prompt with an image', description: 'A prompt with image content' },
    async () => ({
      messages: [
        { role: 'user', content: { type: 'image', data: PNG_BASE64, mimeType: 'image/png' } },
        { role: 'user', content: text('Please analyze the image above.') },
      ],
    }),
  );

  return mcp;
}

function stopWatching(state) {
  if (state.timer) clearInterval(state.timer);
  state.timer = undefined;
}

// --------------------------------------------------------------------------
// HTTP

const eventStore = new EventStore();

function jsonRpcError(res, status, code, message) {
  res.status(status).json({ jsonrpc: '2.0', error: { code, message }, id: null });
}

async function openSession(req, res) {
  const state = { subscriptions: new Set(), watchedVersion: 1, timer: undefined };
  const mcp = createServer(state);
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    eventStore,
    retryInterval: 500,
    onsessioninitialized: (id) => {
      sessions.set(id, { transport, mcp, state });
      console.log(`session opened: ${id}`);
    },
  });
  transport.onclose = () => {
    const id = transport.sessionId;
    stopWatching(state);
    if (id && sessions.delete(id)) console.log(`session closed: ${id}`);
  };
  await mcp.connect(transport);
  await transport.handleRequest(req, res, req.body);
}

// Host-header validation (DNS rebinding) and the JSON body parser.
const app = createMcpExpressApp({ host: HOST });

app.all('/mcp', async (req, res) => {
  try {
    const id = req.get('mcp-session-id');
    if (id !== undefined) {
      const session = sessions.get(id);
      if (!session) return jsonRpcError(res, 404, -32001, 'Session not found');
      return await session.transport.handleRequest(req, res, req.body);
    }
    if (req.method === 'POST' && isInitializeRequest(req.body)) return await openSession(req, res);
    return jsonRpcError(res, 400, -32000, 'Bad Request: no Mcp-Session-Id (only initialize opens a session)');
  } catch (error) {
    console.error('error handling MCP request:', error);
    if (!res.headersSent) jsonRpcError(res, 500, -32603, 'Internal server error');
  }
});

const port = Number(process.env.PORT ?? 0);
const httpServer = app.listen(port, HOST, () => {
  console.log(`conformance-server listening on ${HOST}:${httpServer.address().port}`);
});
httpServer.on('error', (error) => {
  console.error(`conformance-server cannot listen on ${HOST}:${port}: ${error.message}`);
  process.exit(1);
});

let stopping = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`conformance-server: ${signal}, closing ${sessions.size} session(s)`);
  setTimeout(() => process.exit(0), 2000).unref();
  for (const { transport } of [...sessions.values()]) await transport.close().catch(() => {});
  httpServer.closeAllConnections();
  httpServer.close(() => process.exit(0));
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
