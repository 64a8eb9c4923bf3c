// A customer's page on Runway's React SDK, exactly as its docs show it, with the connectUrl
// switched to avatar_server. The page sets window.AVATAR_TEST = {avatarId, connectUrl} first;
// what the SDK reports (errors, end) is kept on window.__sdk for the test to read.
import { createRoot } from "react-dom/client";
import { AvatarCall } from "@runwayml/avatars-react";

const { avatarId, connectUrl } = window.AVATAR_TEST;
const seen = (window.__sdk = { errors: [], ended: 0, rendered: true });

function App() {
  return (
    <AvatarCall
      avatarId={avatarId}
      connectUrl={connectUrl}
      onError={(err) => seen.errors.push({ name: err?.name, code: err?.code, message: String(err?.message ?? err) })}
      onEnd={() => { seen.ended += 1; }}
    />
  );
}

createRoot(document.getElementById("root")).render(<App />);
