// The GraphQL transport: one `fetch` per request with the signed-in token; errors sorted into
// what the caller can act on (offline, signed out, refused by the API).
import { signal } from "@preact/signals";

export type GqlError = {
  message: string;
  path?: (string | number)[];
  extensions?: { code?: string; [key: string]: unknown };
};
export type MutationError = { code: string; message: string; field?: string | null };
export type GqlResult<T> = { data: T | null; errors?: GqlError[] };

/** No answer: offline, timed out, or the server failed (5xx). Safe to try again later. */
export class NetworkError extends Error {}
/** The token is missing, expired or revoked: sign in again. */
export class AuthError extends Error {}
/** The API answered with top-level errors (a bad query, a missing role). */
export class ApiError extends Error {
  constructor(readonly errors: GqlError[]) {
    super(errors.map((e) => e.message).join("; "));
  }
}

const TOKEN_KEY = "mes.token";
export const token = signal<string | null>(localStorage.getItem(TOKEN_KEY));
token.subscribe((value) => {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
});

export const endpoint = new URL("/graphql", location.href).href;

const AUTH_CODES = new Set(["UNAUTHENTICATED"]);

/** Sends one GraphQL request; the raw result (data and errors) unless there was no answer. */
export async function request<T>(
  query: string,
  variables: Record<string, unknown> = {},
  { timeoutMs = 15_000 }: { timeoutMs?: number } = {},
): Promise<GqlResult<T>> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token.value) headers.authorization = `Bearer ${token.value}`;
  let response: Response;
  try {
    response = await fetch(endpoint, {
      method: "POST",
      headers,
      body: JSON.stringify({ query, variables }),
      signal: AbortSignal.timeout(timeoutMs),
      cache: "no-store",
    });
  } catch (error) {
    throw new NetworkError(navigator.onLine ? `no answer from the server (${error})` : "offline");
  }
  if (response.status >= 500 || response.status === 429 || response.status === 408) {
    throw new NetworkError(`the server answered ${response.status}`);
  }
  let body: GqlResult<T>;
  try {
    body = (await response.json()) as GqlResult<T>;
  } catch {
    throw new NetworkError(`the server answered ${response.status} without JSON`);
  }
  const codes = (body.errors ?? []).map((e) => e.extensions?.code ?? "");
  if (response.status === 401 || codes.some((c) => AUTH_CODES.has(c))) {
    throw new AuthError(body.errors?.[0]?.message ?? "sign in again");
  }
  return body;
}

/** A read: its data, or an ApiError for top-level errors. */
export async function query<T>(q: string, variables: Record<string, unknown> = {}): Promise<T> {
  const result = await request<T>(q, variables);
  if (result.errors?.length || !result.data) throw new ApiError(result.errors ?? []);
  return result.data;
}

/** A new idempotency key for a mutation (`clientMutationId`). */
export function newId(): string {
  return crypto.randomUUID();
}
