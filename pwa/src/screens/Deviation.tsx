import { Page } from "../ui";

// Placeholder: to be written.
export function Deviation(_props: { args: string[] }) {
  return <Page title="Deviation">Not built yet.</Page>;
}
