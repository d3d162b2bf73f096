import { Page } from "../ui";

// Placeholder: to be written.
export function Sync(_props: { args: string[] }) {
  return <Page title="Sync">Not built yet.</Page>;
}
