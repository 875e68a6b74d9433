#!/usr/bin/env node
// Fetch URLs through fanoutd and handle each result as it arrives (Node built-ins only).
//
//   node fanout_example.js URL...     one batch document of these URLs
//   node fanout_example.js < urls     a streamed batch: each line of stdin is sent as it is read
//
// The daemon is $FANOUTD (unix:/path or HOST:PORT), by default unix:/run/fanoutd/fanoutd.sock.
// Prints "INDEX STATUS URL" (or "INDEX ERROR-KIND URL") per result, then the summary;
// exits 1 if any request got an error instead of a response, 2 if the batch was refused.
'use strict';
const http = require('node:http');
const readline = require('node:readline');

const addr = process.env.FANOUTD || 'unix:/run/fanoutd/fanoutd.sock';
const [, host, port] = /^\[?(.*?)\]?:(\d+)$/.exec(addr) || [];
const daemon = addr.startsWith('unix:') ? { socketPath: addr.slice(5) } : { host, port };

const urls = process.argv.slice(2);
const options = { concurrency: 64, body: 'none' }; // results without bodies: just the outcome

const req = http.request({
  ...daemon,
  method: 'POST',
  path: '/v1/batch',
  headers: {
    'Content-Type': urls.length ? 'application/json' : 'application/x-ndjson',
    Accept: 'application/x-ndjson',
  },
});
req.on('error', (err) => {
  console.error(`fanoutd: ${err.message}`);
  process.exit(3);
});

req.on('response', async (res) => {
  if (res.statusCode !== 200) { // refused as a whole: {"error": {"kind": ..., "message": ...}}
    let text = '';
    for await (const chunk of res) text += chunk;
    const { error } = JSON.parse(text);
    console.error(`fanoutd: ${res.statusCode} ${error.kind}: ${error.message}`);
    process.exit(2);
  }
  let summary;
  // One JSON object per line, each as soon as its request finishes.
  for await (const line of readline.createInterface({ input: res, crlfDelay: Infinity })) {
    const result = JSON.parse(line);
    if (result.summary) summary = result.summary;
    else if (result.error) console.log(result.index, result.error.kind, result.url ?? '-');
    else console.log(result.index, result.status, result.url);
  }
  if (!summary) {
    console.error('fanoutd: the connection closed before the summary');
    process.exit(3);
  }
  console.log(`summary: ${summary.total} total, ${summary.responses} responses, ${summary.errors} errors`);
  process.exitCode = summary.errors ? 1 : 0;
});

if (urls.length) {
  req.end(JSON.stringify({ requests: urls, options }));
} else {
  // A streamed batch: an options line, then one request (a URL string or an object) per
  // line, written as stdin gives them; the results above arrive meanwhile.
  req.write(JSON.stringify({ options }) + '\n');
  readline.createInterface({ input: process.stdin })
    .on('line', (url) => url.trim() && req.write(JSON.stringify(url.trim()) + '\n'))
    .on('close', () => req.end());
}
