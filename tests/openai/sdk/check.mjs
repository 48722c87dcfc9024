// tests/openai/sdk/check.mjs: what the SDK scripts (sdk-check.mjs, sdk-tools.mjs) share: the
// client for BASE_URL and API_KEY (no retries, so an error is seen as the gateway sent it),
// and check(cond, what, got), which prints "ok: what" or "FAIL: what: got" and exits 1.
import OpenAI from "openai";

export const makeClient = (baseURL, apiKey) => new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });

export const check = (cond, what, got) => {
  if (!cond) {
    console.log(`FAIL: ${what}: ${JSON.stringify(got)}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
};
