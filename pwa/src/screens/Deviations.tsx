import { Page } from "../ui";

// Placeholder: to be written.
export function Deviations(_props: { args: string[] }) {
  return <Page title="Deviations">Not built yet.</Page>;
}
