import { Page } from "../ui";

// Placeholder: to be written.
export function Inspect(_props: { args: string[] }) {
  return <Page title="Inspect">Not built yet.</Page>;
}
