import { Page } from "../ui";

// Placeholder: to be written.
export function Home(_props: { args: string[] }) {
  return <Page title="Home">Not built yet.</Page>;
}
