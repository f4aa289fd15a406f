// Shared by the add-on tests: the real English messages and a `t` over them.

import { readFileSync } from "node:fs";
import { makeI18n } from "./fake-messenger.mjs";

export const LOCALE = JSON.parse(
  readFileSync(new URL("../_locales/en/messages.json", import.meta.url), "utf-8"),
);

const i18n = makeI18n(LOCALE);

export const t = (key, substitutions) => i18n.getMessage(key, substitutions) || key;

/** A host client stand-in that answers every request with `answer(type, fields)`. */
export function fakeHost(answer) {
  const requests = [];
  return {
    requests,
    async request(type, fields = {}) {
      requests.push({ type, ...fields });
      return answer(type, fields);
    },
  };
}
