import { Page } from "../ui";

// Placeholder: to be written.
export function LotScreen(_props: { args: string[] }) {
  return <Page title="Lot">Not built yet.</Page>;
}
