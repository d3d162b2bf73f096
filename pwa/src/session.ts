// Who is signed in on this device, and the device's own settings (its work center).
import { computed, signal } from "@preact/signals";
import { query, request, token } from "./api";

export type Role = "ADMIN" | "ERP" | "OPERATOR" | "SUPERVISOR" | "QUALITY" | "EQUIPMENT" | "VIEWER";
export type User = { username: string; displayName: string; roles: Role[] };

const USER_KEY = "mes.user";
const WORK_CENTER_KEY = "mes.workCenter";

function stored<T>(key: string): T | null {
  try {
    return JSON.parse(localStorage.getItem(key) ?? "null") as T | null;
  } catch {
    return null;
  }
}

/** Kept on the device so the app opens signed in while offline. */
export const user = signal<User | null>(token.value ? stored<User>(USER_KEY) : null);
user.subscribe((u) => {
  if (u) localStorage.setItem(USER_KEY, JSON.stringify(u));
  else localStorage.removeItem(USER_KEY);
});

/** The work center this handheld works at ("my work"). */
export const workCenter = signal<string | null>(localStorage.getItem(WORK_CENTER_KEY));
workCenter.subscribe((code) => {
  if (code) localStorage.setItem(WORK_CENTER_KEY, code);
  else localStorage.removeItem(WORK_CENTER_KEY);
});

export const isSupervisor = computed(() =>
  (user.value?.roles ?? []).some((r) => r === "SUPERVISOR" || r === "QUALITY" || r === "ADMIN"),
);
export const isOperator = computed(() =>
  (user.value?.roles ?? []).some((r) => r === "OPERATOR" || r === "SUPERVISOR" || r === "ADMIN"),
);

const LOGIN = `mutation Login($username: String!, $password: String!) {
  login(username: $username, password: $password) {
    token user { username displayName roles } errors { code message }
  }
}`;

/** Signs in; the server's message when refused (wrong password, throttled). */
export async function signIn(username: string, password: string): Promise<string | null> {
  type Answer = {
    login: { token: string | null; user: User | null; errors: { message: string }[] };
  };
  const result = await request<Answer>(LOGIN, { username, password });
  const payload = result.data?.login;
  if (!payload) return result.errors?.[0]?.message ?? "sign-in failed";
  if (payload.errors.length || !payload.token || !payload.user) {
    return payload.errors[0]?.message ?? "sign-in failed";
  }
  token.value = payload.token;
  user.value = payload.user;
  return null;
}

export function signOut(): void {
  token.value = null;
  user.value = null;
}

/** Refreshes the user's roles when online (they may have changed). */
export async function refreshMe(): Promise<void> {
  if (!token.value) return;
  const data = await query<{ me: User | null }>("{ me { username displayName roles } }");
  if (data.me) user.value = data.me;
}
