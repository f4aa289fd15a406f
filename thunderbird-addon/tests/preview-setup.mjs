// For screenshots only: runs a popup in a plain browser page against the
// fake messenger API and the fake segcard. The scenario comes from the
// page's ?scenario= parameter (see screenshots.mjs).

import { makeMessenger } from "./fake-messenger.mjs";
import { IDENTITY, makeSegcard } from "./fake-segcard.mjs";

const segcard = makeSegcard();
const TOM = segcard.contacts["uid-tom"].address;

const QUOTE = `Sounds good.\n\nOn Monday, John Doe <${IDENTITY}> wrote:\n> Shall we meet?`;

const SCENARIOS = {
  "display-warn": {
    displayed: [{ id: 1 }],
    messages: {
      1: { headers: { from: ["Offers <deals@bulk.example>"], "delivered-to": [TOM], to: [TOM] } },
    },
  },
  "display-via": {
    displayed: [{ id: 1 }],
    messages: {
      1: { headers: { from: ["Tom Smith <tom@example.org>"], "delivered-to": [TOM], to: [TOM] } },
    },
  },
  "compose-split": {
    compose: {
      1: {
        from: `John Doe <${IDENTITY}>`,
        to: ["Tom Smith <tom@example.org>", "Bank <service@bank.example>", "info@shop.example"],
        isPlainText: true,
        plainTextBody: QUOTE,
      },
    },
  },
  "compose-shared": {
    compose: { 1: { from: `John Doe <${IDENTITY}>`, to: ["Tom Smith <tom@example.org>"] } },
  },
};

const scenario = new URLSearchParams(globalThis.location.search).get("scenario");
const locale = await (await fetch("/_locales/en/messages.json")).json();
globalThis.messenger = makeMessenger({ locale, host: segcard.answer, ...SCENARIOS[scenario] });
await import("../background.js");
