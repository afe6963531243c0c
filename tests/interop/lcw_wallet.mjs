#!/usr/bin/env node
// A stand-in for the DCC Learner Credential Wallet's VC API exchange, written with the libraries LCW's own
// code uses (Digital Bazaar's @digitalbazaar/vc and the Ed25519Signature2020 suite; LCW ships forks of
// the same code), so that our exchange endpoint is exercised by an implementation we did not write.
//
//   node lcw_wallet.mjs LCW_LINK [--replay]
//
// LCW_LINK is the deep link the service hands out (https://lcw.app/mobile?request=<JSON>). Like LCW, the
// script reads `protocols.vcapi` from the `request` parameter, generates an Ed25519 did:key, POSTs `{}` to
// the exchange, answers the DIDAuthentication request with a presentation signed by that did:key
// (proofPurpose authentication, the request's challenge and domain) and POSTs it to
// `interact.service[0].serviceEndpoint`. With --replay it then POSTs the very same presentation again.
//
// The document loader knows only the contexts of the npm packages below and refuses every other URL:
// nothing is fetched but the exchange itself.
//
// Prints one JSON line: {"did", "request", "status", "response", "replay"?: {"status", "response"}}.
// Exit 0 when the exchange answered (whatever it answered), 2 on usage errors, 3 on anything else.

import {contexts as credentialsContexts} from '@digitalbazaar/credentials-context';
import * as vc from '@digitalbazaar/vc';
import {Ed25519Signature2020} from '@digitalbazaar/ed25519-signature-2020';
import {Ed25519VerificationKey2020} from '@digitalbazaar/ed25519-verification-key-2020';
import ed25519Context from 'ed25519-signature-2020-context';

const USAGE = 'usage: node lcw_wallet.mjs LCW_LINK [--replay]';

function documentLoader(url) {
  const document = credentialsContexts.get(url) || ed25519Context.contexts.get(url);
  if(!document) {
    throw new Error(`refusing to load ${url}: not a bundled context`);
  }
  return {contextUrl: null, documentUrl: url, document};
}

async function post(url, body) {
  const response = await fetch(url, {
    method: 'POST',
    headers: {'Content-Type': 'application/json', Accept: 'application/json'},
    body: JSON.stringify(body)
  });
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = {unparsed: text.slice(0, 2000)};
  }
  return {status: response.status, json};
}

async function main(argv) {
  const [link, ...flags] = argv;
  if(!link || flags.some(f => f !== '--replay')) {
    console.error(USAGE);
    return 2;
  }
  const request = JSON.parse(new URL(link).searchParams.get('request'));
  const exchangeUrl = request?.protocols?.vcapi;
  if(typeof exchangeUrl !== 'string') {
    throw new Error('the link names no vcapi exchange');
  }

  // The wallet's identity: a fresh Ed25519 key as a did:key, as LCW makes one per profile.
  const key = await Ed25519VerificationKey2020.generate();
  const did = `did:key:${key.fingerprint()}`;
  key.controller = did;
  key.id = `${did}#${key.fingerprint()}`;

  const started = await post(exchangeUrl, {});
  const vpr = started.json?.verifiablePresentationRequest;
  if(started.status !== 200 || !vpr) {
    console.log(JSON.stringify({did, request, status: started.status, response: started.json}));
    return 0;
  }
  const queries = [].concat(vpr.query || []);
  if(!queries.some(q => q.type === 'DIDAuthentication')) {
    throw new Error('the exchange did not ask for DIDAuthentication');
  }
  const presentation = vc.createPresentation({holder: did});
  const signed = await vc.signPresentation({
    presentation,
    suite: new Ed25519Signature2020({key}),
    challenge: vpr.challenge,
    domain: vpr.domain,
    documentLoader
  });
  const next = vpr.interact?.service?.[0]?.serviceEndpoint || exchangeUrl;
  const answered = await post(next, {verifiablePresentation: signed});
  const out = {did, request, vpr, presentation: signed, status: answered.status, response: answered.json};
  if(flags.includes('--replay')) {
    const again = await post(next, {verifiablePresentation: signed});
    out.replay = {status: again.status, response: again.json};
  }
  console.log(JSON.stringify(out));
  return 0;
}

main(process.argv.slice(2)).then(code => {
  process.exitCode = code;
}, error => {
  console.log(JSON.stringify({error: String(error?.stack || error)}));
  process.exitCode = 3;
});
