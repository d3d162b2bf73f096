import { Page } from "../ui";

// Placeholder: to be written.
export function EquipmentBoard(_props: { args: string[] }) {
  return <Page title="EquipmentBoard">Not built yet.</Page>;
}
