import { Page } from "../ui";

// Placeholder: to be written.
export function Order(_props: { args: string[] }) {
  return <Page title="Order">Not built yet.</Page>;
}
