// A wallet we did not write: oid4vc-ts (@openid4vc/openid4vci, the OpenID4VCI client inside the Credo and
// Paradym wallets) runs the pre-authorized code flow against our issuer, from the offer link to the
// credential. Only the key handling (generating the holder key, signing the key proof, hashing, random
// bytes) is ours: the library builds and sends every request and parses every response.
//
//   node oid4vci_wallet.mjs SCENARIOS.json
//
// SCENARIOS.json is a JSON array of {"name", "offer_link", "tx_code"?, "key": "did:key"|"jwk",
// "alg": "EdDSA"|"ES256", "configuration", "shape": "proofs"|"proof", "wrong_tx_code"?, "twice"?}.
// Prints one JSON object: {"results": [{"name", "ok", "draft", "holder", "credential"?, "errors": {...}}]}.
// Exit 0 when it ran (each result says how its flow went), 2 on usage errors, 3 on a crash.

import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { clientAuthenticationAnonymous } from '@openid4vc/oauth2';
import { Openid4vciClient, setGlobalConfig } from '@openid4vc/openid4vci';

// The test server is plain http on 127.0.0.1; the library refuses http:// URLs unless told otherwise.
setGlobalConfig({ allowInsecureUrls: true });

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');

const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
function base58btc(bytes) {
  let value = BigInt('0x' + (Buffer.from(bytes).toString('hex') || '0'));
  let text = '';
  while (value > 0n) {
    text = B58[Number(value % 58n)] + text;
    value /= 58n;
  }
  for (const byte of bytes) {
    if (byte !== 0) break;
    text = '1' + text;
  }
  return 'z' + text;
}

// A holder key: Ed25519 (EdDSA) or P-256 (ES256), named by a did:key DID URL or by the jwk header.
function holderKey(alg, method) {
  const { privateKey, publicKey } = alg === 'EdDSA'
    ? generateKeyPairSync('ed25519')
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  let multikey;
  if (alg === 'EdDSA') {
    multikey = base58btc(Buffer.concat([Buffer.from([0xed, 0x01]), Buffer.from(jwk.x, 'base64url')]));
  } else {
    const y = Buffer.from(jwk.y, 'base64url');
    const prefix = Buffer.from([0x80, 0x24, (y[y.length - 1] & 1) ? 0x03 : 0x02]);
    multikey = base58btc(Buffer.concat([prefix, Buffer.from(jwk.x, 'base64url')]));
  }
  const didKey = `did:key:${multikey}`;
  const signer = method === 'did:key'
    ? { method: 'did', didUrl: `${didKey}#${multikey}`, alg }
    : { method: 'jwk', publicJwk: jwk, alg };
  return { privateKey, jwk, signer, didKey };
}

function callbacks(key) {
  return {
    fetch: (url, init) => fetch(url, init),
    hash: (data, alg) => new Uint8Array(createHash(alg.replace('-', '')).update(data).digest()),
    generateRandom: (length) => new Uint8Array(randomBytes(length)),
    clientAuthentication: clientAuthenticationAnonymous(),
    signJwt: async (signer, { header, payload }) => {
      const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
      const signature = signer.alg === 'EdDSA'
        ? sign(null, Buffer.from(input), key.privateKey)
        : sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
      return { jwt: `${input}.${b64url(signature)}`, signerJwk: key.jwk };
    },
    verifyJwt: async () => { throw new Error('not used'); },
  };
}

// What went wrong, as the library reports it: the OAuth/OID4VCI error code where the server sent one.
async function describe(error) {
  const out = { name: error?.constructor?.name, message: String(error?.message ?? error) };
  const response = error?.response?.response ?? error?.response;
  if (response && typeof response.clone === 'function') {
    out.status = response.status;
    try {
      out.body = await response.clone().json();
    } catch {
      out.body = null;
    }
  }
  if (error?.errorResponse) out.body = error.errorResponse;
  return out;
}

async function run(scenario) {
  const key = holderKey(scenario.alg, scenario.key);
  const client = new Openid4vciClient({ callbacks: callbacks(key) });
  const result = { name: scenario.name, ok: false, errors: {} };

  const credentialOffer = await client.resolveCredentialOffer(scenario.offer_link);
  const issuerMetadata = await client.resolveIssuerMetadata(credentialOffer.credential_issuer);
  result.draft = issuerMetadata.originalDraftVersion;
  result.offered = credentialOffer.credential_configuration_ids;

  if (scenario.wrong_tx_code) {
    try {
      await client.retrievePreAuthorizedCodeAccessTokenFromOffer({
        credentialOffer, issuerMetadata, txCode: scenario.wrong_tx_code,
      });
      result.errors.wrong_tx_code = { unexpected: 'a wrong PIN was accepted' };
    } catch (error) {
      result.errors.wrong_tx_code = await describe(error);
    }
  }
  const { accessTokenResponse } = await client.retrievePreAuthorizedCodeAccessTokenFromOffer({
    credentialOffer, issuerMetadata, txCode: scenario.tx_code ?? undefined,
  });

  const request = async () => {
    const { c_nonce: nonce } = await client.requestNonce({ issuerMetadata });
    const { jwt } = await client.createCredentialRequestJwtProof({
      issuerMetadata, signer: key.signer, credentialConfigurationId: scenario.configuration, nonce,
      issuedAt: new Date(),
    });
    const proofPart = scenario.shape === 'proof' ? { proof: { proof_type: 'jwt', jwt } } : { proofs: { jwt: [jwt] } };
    return client.retrieveCredentials({
      issuerMetadata, accessToken: accessTokenResponse.access_token,
      credentialConfigurationId: scenario.configuration, ...proofPart,
    });
  };
  const { credentialResponse } = await request();
  result.credential = credentialResponse.credentials[0].credential;
  result.holder = scenario.key === 'did:key'
    ? key.didKey
    : 'did:jwk:' + b64url(JSON.stringify(Object.fromEntries(
      Object.entries(key.jwk).filter(([name]) => ['crv', 'kty', 'x', 'y'].includes(name)).sort())));
  result.ok = true;

  if (scenario.twice) {
    try {
      await request();
      result.errors.twice = { unexpected: 'a second credential was issued for one access token' };
    } catch (error) {
      result.errors.twice = await describe(error);
    }
  }
  return result;
}

async function main() {
  if (process.argv.length !== 3) {
    console.error('usage: node oid4vci_wallet.mjs SCENARIOS.json');
    process.exit(2);
  }
  let scenarios;
  try {
    scenarios = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  } catch (error) {
    console.error(`cannot read the scenarios: ${error.message}`);
    process.exit(2);
  }
  const results = [];
  for (const scenario of scenarios) {
    try {
      results.push(await run(scenario));
    } catch (error) {
      results.push({ name: scenario.name, ok: false, failure: await describe(error) });
    }
  }
  console.log(JSON.stringify({ results }));
}

main().catch((error) => {
  console.error(error);
  process.exit(3);
});
