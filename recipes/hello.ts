// The smallest recipe: two derivations and the host tools they use.
// `ukb realise recipes/hello.ts` prints the path of `shout`, whose file says HELLO.
import { derivation, hostTools } from "ukb";

const tools = hostTools(["sh", "tr"]);
export const greeting = derivation({
  name: "greeting",
  builder: `${tools}/bin/sh`,
  args: ["-c", "echo hello > $out"],
});
export default derivation({
  name: "shout",
  builder: `${tools}/bin/sh`,
  args: ["-c", `${tools}/bin/tr a-z A-Z < ${greeting} > $out`],
});
