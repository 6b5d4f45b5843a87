/**
 * The one way the proxy makes HTTP requests of its own (token endpoints, the device sign-in of
 * oauth-login, routing lookups): undici's fetch through an EnvHttpProxyAgent, because Node 20's
 * global fetch ignores HTTPS_PROXY, HTTP_PROXY and NO_PROXY and corporate networks reach the
 * identity providers only through such a proxy. --http-proxy names one proxy for both schemes
 * and wins over the variables; NO_PROXY still exempts the hosts it names.
 */
import { EnvHttpProxyAgent, fetch as undiciFetch } from 'undici';

/** The Fetch API's signature, as openid-client's customFetch and the lookup call it. */
export type FetchFunction = (url: string, init?: RequestInit) => Promise<Response>;

export interface OutboundHttp {
  readonly fetch: FetchFunction;
  /** Closes the kept connections (the proxy's shutdown). */
  close(): Promise<void>;
}

export function outboundHttp(httpProxy: string | undefined): OutboundHttp {
  const agent = new EnvHttpProxyAgent(httpProxy === undefined ? {} : { httpProxy, httpsProxy: httpProxy });
  const fetch: FetchFunction = async (url, init) => {
    // undici's own fetch: the dispatcher of the npm undici does not fit Node 20's bundled fetch.
    const options = { ...(init as object), dispatcher: agent } as Parameters<typeof undiciFetch>[1];
    // undici's Response is the Fetch API's in all but identity: openid-client tells it by
    // Symbol.toStringTag, and the lookup reads only its headers.
    return undiciFetch(url, options);
  };
  return { fetch, close: () => agent.close() };
}

/** Checks a --http-proxy value: an http:// or https:// URL; undefined when it is not one. */
export function proxyUrlProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'is not a URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be an http:// or https:// URL';
  return undefined;
}
