// Karmyq from TypeScript under Node, through the N-API flavour of the
// bindings that ubrn generates from the same library as React Native's
// (bindings/test writes it to ./generated): a round trip, the whole
// mutual-aid story between two devices through a real sync server,
// listeners, and errors with their stable codes.
//
// KARMYQ_TARGET: the cargo target folder holding sync-test-server.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import {
  ApiError,
  Category,
  KarmyqClient,
  KarmyqEvent,
  NotificationKind,
  RequestKind,
  RequestStatus,
  SyncState,
  Urgency,
  Visibility,
  karmyqVersion,
  type KarmyqClientLike,
  type KarmyqListener,
  type RequestDraft,
} from "./generated/index";

/** How long any wait for another device or the server may take. */
const PATIENCE_MS = 20_000;
const TARGET = process.env.KARMYQ_TARGET ?? join(__dirname, "../../../target/debug");

const sofa = (): RequestDraft => ({
  title: "Move a sofa",
  description: "Two floors down",
  category: Category.Moving,
  urgency: Urgency.High,
  kind: RequestKind.Generic,
});

const opened: KarmyqClientLike[] = [];
function device(): KarmyqClientLike {
  const client = KarmyqClient.open(mkdtempSync(join(tmpdir(), "karmyq-node-")));
  opened.push(client);
  return client;
}

/** Queues every event; `expect` waits for one that matches. */
class Events implements KarmyqListener {
  private seen: KarmyqEvent[] = [];

  onEvent(event: KarmyqEvent): void {
    this.seen.push(event);
  }

  async expect<T extends KarmyqEvent>(what: string, want: (e: KarmyqEvent) => e is T): Promise<T>;
  async expect(what: string, want: (e: KarmyqEvent) => boolean): Promise<KarmyqEvent>;
  async expect(what: string, want: (e: KarmyqEvent) => boolean): Promise<KarmyqEvent> {
    const deadline = Date.now() + PATIENCE_MS;
    while (Date.now() < deadline) {
      const i = this.seen.findIndex(want);
      if (i >= 0) {
        const [event] = this.seen.splice(0, i + 1).slice(-1);
        return event;
      }
      await sleep(20);
    }
    assert.fail(`no event: ${what}`);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + PATIENCE_MS;
  while (Date.now() < deadline) {
    if (cond()) return;
    await sleep(50);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** Starts target/debug/sync-test-server; resolves to its sync URL. */
async function startServer(): Promise<{ url: string; process: ChildProcess }> {
  const child = spawn(join(TARGET, "sync-test-server"), [mkdtempSync(join(tmpdir(), "karmyq-server-"))], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout! });
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("sync-test-server did not start")), PATIENCE_MS);
    child.once("error", reject);
    lines.once("line", (l) => {
      clearTimeout(timer);
      resolve(l);
    });
  });
  assert.match(line, /^listening /);
  return { url: `ws://${line.split(" ")[1]}/v1/sync`, process: child };
}

/** Runs `call`, expecting it to throw an ApiError; returns that error. */
function failure(call: () => unknown): ApiError {
  try {
    call();
  } catch (e) {
    assert.ok(ApiError.instanceOf(e), `not an ApiError: ${e}`);
    return e;
  }
  assert.fail("the call succeeded");
}

test.after(() => {
  for (const client of opened) client.close();
});

test("a round trip", () => {
  assert.equal(karmyqVersion(), "0.1.0");
  const client = device();
  const community = client.createCommunity("Elm Street", "Neighbours", Visibility.Public);
  assert.deepEqual(
    client.communities().map((c) => c.id),
    [community],
  );
  const request = client.postRequest([community], sofa());
  const view = client.request(community, request);
  assert.equal(view.draft.title, "Move a sofa");
  assert.equal(view.draft.category, Category.Moving);
  assert.equal(view.requester, client.memberId());
  assert.equal(view.status, RequestStatus.Open);
});

test("two devices help each other through a server", async () => {
  const server = await startServer();
  try {
    const alice = device();
    const bob = device();
    const aliceEvents = new Events();
    const bobEvents = new Events();
    const aliceHandle = alice.subscribe(aliceEvents);
    const bobHandle = bob.subscribe(bobEvents);

    // A match earns karma only 15 minutes after its acceptance: both clocks
    // start 20 minutes in the past and return to the present before the
    // confirmations.
    const start = alice.now() - 20n * 60n * 1000n;
    alice.setClock(start);
    bob.setClock(start);

    const community = alice.createCommunity("Elm Street", "", Visibility.Public);
    const report = bob.receive(alice.exportCommunity(community));
    assert.equal(report.community, community);
    assert.deepEqual(report.rejected, []);
    bob.join(community);
    alice.startSync(server.url, community);
    bob.startSync(server.url, community);
    assert.deepEqual(bob.syncing(), [community]);
    await bobEvents.expect(
      "bob up to date",
      (e) => KarmyqEvent.SyncStatusChanged.instanceOf(e) && SyncState.UpToDate.instanceOf(e.inner.status),
    );
    await aliceEvents.expect(
      "bob joined, at alice's",
      (e) => KarmyqEvent.MemberJoined.instanceOf(e) && e.inner.member === bob.memberId(),
    );

    const request = alice.postRequest([community], sofa());
    await bobEvents.expect(
      "the request at bob's",
      (e) => KarmyqEvent.RequestCreated.instanceOf(e) && e.inner.request === request,
    );
    const offer = bob.offerHelp(community, request, "I have a van");
    await aliceEvents.expect(
      "bob's offer at alice's",
      (e) => KarmyqEvent.OfferReceived.instanceOf(e) && e.inner.offer === offer,
    );
    alice.acceptOffer(community, request, offer);
    const notified = await bobEvents.expect(
      "the acceptance, notified to bob",
      (e) =>
        KarmyqEvent.Notified.instanceOf(e) && e.inner.notification.kind === NotificationKind.OfferAccepted,
    );
    assert.ok(KarmyqEvent.Notified.instanceOf(notified));
    assert.equal(notified.inner.notification.request, request);
    assert.equal(notified.inner.notification.actor, alice.memberId());

    alice.setClock(undefined);
    bob.setClock(undefined);
    bob.confirmMatch(community, request, undefined);
    alice.confirmMatch(community, request, "Thank you!");
    await waitUntil("bob's karma at alice's", () => alice.karma(community, bob.memberId()) > 0);
    assert.equal(alice.request(community, request).status, RequestStatus.Completed);

    const chat = alice.openConversation(community, bob.memberId());
    alice.sendMessage(community, chat, "See you at six");
    await bobEvents.expect(
      "the message at bob's",
      (e) => KarmyqEvent.MessageReceived.instanceOf(e) && e.inner.conversation === chat,
    );
    const messages = bob.messages(community, chat, undefined, 10);
    assert.equal(messages.at(-1)?.body, "See you at six");
    assert.equal(messages.at(-1)?.sender, alice.memberId());
    assert.equal(bob.unreadMessages(community), 1);

    alice.stopSync(community);
    bob.stopSync(community);
    assert.deepEqual(alice.syncing(), []);
    aliceHandle.cancel();
    bobHandle.cancel();
  } finally {
    server.process.kill();
  }
});

test("failures carry their category and code", () => {
  const client = device();
  const community = client.createCommunity("Pine Court", "", Visibility.Public);
  const request = client.postRequest([community], sofa());

  const own = failure(() => client.offerHelp(community, request, "me"));
  assert.ok(ApiError.Rejected.instanceOf(own));
  assert.equal(own.inner.code, "illegal_transition");
  assert.ok(own.inner.detail.length > 0);

  const badId = failure(() => client.communityInfo("not-an-id"));
  assert.ok(ApiError.InvalidInput.instanceOf(badId));
  assert.equal(badId.inner.code, "invalid_id");

  const badBytes = failure(() => client.receive(new TextEncoder().encode("not a bundle").buffer));
  assert.equal(badBytes.inner.code, "malformed");

  const noSync = failure(() => client.joinRequests(community));
  assert.ok(ApiError.NotFound.instanceOf(noSync));
  assert.equal(noSync.inner.code, "no_sync");

  client.close();
  const closed = failure(() => client.communities());
  assert.ok(ApiError.Closed.instanceOf(closed));
  assert.equal(closed.inner.code, "closed");
});
