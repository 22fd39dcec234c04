// SMART App Launch authorization server for the SMART app's browser tests (loopback only).
//
// oidc-provider (a certified OpenID Connect / OAuth 2 implementation) configured for an EHR launch:
// - one public client (token_endpoint_auth_method none), PKCE S256 required;
// - `launch` and `aud` authorization parameters: `launch` must name a launch context registered by the
//   test (the EHR's side of a card's SMART link), `aud` must equal the FHIR server's base URL;
// - the token response carries the launch context: `patient` (and `appContext` when the card sent one);
// - the access token lives as long as the launch context says (default 300 s), for the expiry test.
// The EHR user is already signed in: the login/consent interaction completes by itself.
//
// Usage: node server.mjs CONFIG_JSON   where CONFIG_JSON = {"fhirBase", "clientId", "redirectUri", "scopes"}
// Prints one JSON line {"port": N} on stdout once listening on 127.0.0.1 (ephemeral port).
// Test helper: POST /__launches {"patient", "appContext"?, "accessTokenTtl"?} -> {"launch": id}.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(process.argv[2]);
const launches = new Map(); // launch id -> context
const launchByGrant = new Map(); // grant id -> context

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: config.clientId,
      token_endpoint_auth_method: 'none',
      redirect_uris: [config.redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    pkce: { required: () => true },
    extraParams: {
      launch(ctx, value) {
        if (ctx.oidc.route !== 'authorization') return;
        if (!value || !launches.has(value)) {
          throw new errors.InvalidRequest('unknown or missing launch');
        }
      },
      aud(ctx, value) {
        if (ctx.oidc.route !== 'authorization') return;
        if (value !== config.fhirBase) {
          throw new errors.InvalidRequest('aud does not name this EHR\'s FHIR server');
        }
      },
    },
    ttl: {
      AccessToken: (ctx, token) => launchByGrant.get(token.grantId)?.accessTokenTtl ?? 300,
      AuthorizationCode: 60,
      Interaction: 300,
      Session: 600,
      Grant: 600,
    },
    features: {
      devInteractions: { enabled: false },
      // The FHIR server is the one resource server: its scopes are the SMART scopes.
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.fhirBase,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (resource !== config.fhirBase) throw new errors.InvalidTarget();
          return { scope: config.scopes, accessTokenFormat: 'opaque' };
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  });

  // SMART: the launch context arrives with the access token.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route === 'token' && ctx.body?.access_token) {
      const code = ctx.oidc.entities.AuthorizationCode;
      const context = code ? launchByGrant.get(code.grantId) : undefined;
      if (context) {
        ctx.body.patient = context.patient;
        if (context.appContext) ctx.body.appContext = context.appContext;
      }
    }
  });

  const callback = provider.callback();
  server.on('request', async (req, res) => {
    try {
      if (req.method === 'POST' && req.url === '/__launches') {
        const body = JSON.parse(await readBody(req));
        const id = crypto.randomBytes(12).toString('hex');
        launches.set(id, {
          patient: body.patient,
          appContext: body.appContext,
          accessTokenTtl: body.accessTokenTtl,
        });
        res.writeHead(201, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ launch: id }));
        return;
      }
      if (req.method === 'GET' && req.url.startsWith('/interaction/')) {
        const details = await provider.interactionDetails(req, res);
        const context = launches.get(details.params.launch);
        const accountId = 'ehr-user';
        const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
        grant.addResourceScope(config.fhirBase, details.params.scope);
        const grantId = await grant.save();
        launchByGrant.set(grantId, context);
        await provider.interactionFinished(
          req, res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false },
        );
        return;
      }
      callback(req, res);
    } catch (error) {
      res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(String(error && error.message));
    }
  });
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});

function readBody(req) {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { text += chunk; });
    req.on('end', () => resolve(text));
    req.on('error', reject);
  });
}

process.on('SIGTERM', () => server.close(() => process.exit(0)));
