import { Page } from "../ui";

// Placeholder: to be written.
export function Receive(_props: { args: string[] }) {
  return <Page title="Receive">Not built yet.</Page>;
}
