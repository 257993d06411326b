// authgate's passkeys (WebAuthn): the sign-in page's button and autofill,
// the second step's "Use your passkey", the account page's "Add a passkey". The only script the pages load, and
// only where passkeys are on; everything else works without it.
(() => {
  'use strict';
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  const bytes = (s) => {
    s = s.replace(/-/g, '+').replace(/_/g, '/');
    while (s.length % 4) s += '=';
    return Uint8Array.from(atob(s), (c) => c.charCodeAt(0)).buffer;
  };
  const text = (b) => {
    let s = '';
    for (const x of new Uint8Array(b)) s += String.fromCharCode(x);
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  };
  // The server's options without nulls (browsers refuse null members).
  const clean = (o) => JSON.parse(JSON.stringify(o, (k, v) => (v === null ? undefined : v)));
  const answer = (c) => {
    if (typeof c.toJSON === 'function') return c.toJSON();
    const r = {};
    for (const k of ['clientDataJSON', 'attestationObject', 'authenticatorData', 'signature', 'userHandle']) {
      if (c.response[k]) r[k] = text(c.response[k]);
    }
    return { id: c.id, rawId: text(c.rawId), type: c.type, response: r,
      clientExtensionResults: c.getClientExtensionResults() };
  };
  const post = async (url, csrf, body) => {
    const r = await fetch(url, {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
      body: JSON.stringify(Object.assign({ lang: document.documentElement.lang }, body)),
    });
    let json = {};
    try { json = await r.json(); } catch (_) { /* not JSON: the message below */ }
    return { ok: r.ok, body: json };
  };
  const say = (el, message) => { el.textContent = message; el.hidden = false; };

  // The sign-in page: a passkey, with no address typed.
  const signIn = document.getElementById('passkey-area');
  if (signIn) {
    const csrf = signIn.dataset.csrf;
    const problem = document.getElementById('passkey-error');
    let autofill = null;
    const run = async (conditional) => {
      const start = await post('/login/passkey/options', csrf, { conditional });
      if (!start.ok) {
        if (!conditional) say(problem, start.body.message || signIn.dataset.failed);
        return;
      }
      const publicKey = clean(start.body.options.publicKey);
      publicKey.challenge = bytes(publicKey.challenge);
      for (const c of publicKey.allowCredentials || []) c.id = bytes(c.id);
      const request = { publicKey };
      if (conditional) {
        autofill = new AbortController();
        request.mediation = 'conditional';
        request.signal = autofill.signal;
      }
      let credential;
      try {
        credential = await navigator.credentials.get(request);
      } catch (_) {
        if (!conditional) say(problem, signIn.dataset.cancelled);
        return;
      }
      if (!credential) return;
      const done = await post('/login/passkey/finish', csrf,
        { ceremony: start.body.ceremony, credential: answer(credential) });
      // Picked from the autofill or asked for by the button: either way
      // the person chose a passkey, so a refusal is said.
      if (done.ok) window.location.assign(done.body.next);
      else say(problem, done.body.message || signIn.dataset.failed);
    };
    signIn.hidden = false;
    document.getElementById('passkey-sign-in').addEventListener('click', () => {
      if (autofill) autofill.abort();
      autofill = null;
      problem.hidden = true;
      run(false);
    });
    if (signIn.dataset.autofill === 'on' && PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then((yes) => { if (yes) run(true); });
    }
  }

  // The second step of a sign-in: the person's own passkey.
  const second = document.getElementById('passkey-second');
  if (second) {
    const csrf = second.dataset.csrf;
    const problem = document.getElementById('passkey-error');
    second.hidden = false;
    document.getElementById('passkey-second-step').addEventListener('click', async () => {
      problem.hidden = true;
      const start = await post('/login/second-factor/passkey/options', csrf, {});
      if (!start.ok) {
        say(problem, start.body.message || second.dataset.failed);
        return;
      }
      const publicKey = clean(start.body.options.publicKey);
      publicKey.challenge = bytes(publicKey.challenge);
      for (const c of publicKey.allowCredentials || []) c.id = bytes(c.id);
      let credential;
      try {
        credential = await navigator.credentials.get({ publicKey });
      } catch (_) {
        say(problem, second.dataset.cancelled);
        return;
      }
      const done = await post('/login/second-factor/passkey/finish', csrf,
        { ceremony: start.body.ceremony, credential: answer(credential) });
      if (done.ok) window.location.assign(done.body.next);
      else say(problem, done.body.message || second.dataset.failed);
    });
  }

  // The account page: add a passkey under a name.
  const add = document.getElementById('passkey-add');
  if (add) {
    const csrf = add.dataset.csrf;
    const problem = document.getElementById('passkey-add-error');
    add.hidden = false;
    document.getElementById('add-passkey').addEventListener('click', async () => {
      problem.hidden = true;
      const start = await post('/account/passkeys/options', csrf, {});
      if (!start.ok) {
        if (start.body.next) { window.location.assign(start.body.next); return; }
        say(problem, start.body.message || add.dataset.failed);
        return;
      }
      const publicKey = clean(start.body.options.publicKey);
      publicKey.challenge = bytes(publicKey.challenge);
      publicKey.user.id = bytes(publicKey.user.id);
      for (const c of publicKey.excludeCredentials || []) c.id = bytes(c.id);
      let credential;
      try {
        credential = await navigator.credentials.create({ publicKey });
      } catch (_) {
        say(problem, add.dataset.cancelled);
        return;
      }
      const done = await post('/account/passkeys/finish', csrf, {
        ceremony: start.body.ceremony,
        name: document.getElementById('passkey-name').value,
        credential: answer(credential),
      });
      if (done.ok) window.location.assign(done.body.next);
      else say(problem, done.body.message || add.dataset.failed);
    });
  }
})();
