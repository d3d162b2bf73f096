import { Page } from "../ui";

// Placeholder: to be written.
export function Scan(_props: { args: string[] }) {
  return <Page title="Scan">Not built yet.</Page>;
}
