import { Page } from "../ui";

// Placeholder: to be written.
export function RaiseDeviation(_props: { args: string[] }) {
  return <Page title="RaiseDeviation">Not built yet.</Page>;
}
