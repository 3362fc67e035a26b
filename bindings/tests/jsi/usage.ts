// Type-checked, never run: the React Native (JSI) bindings as an app uses
// them. tsc checks these calls against bindings/react-native/ts; running
// them needs a React Native app (the Node suite runs the same API).

import {
  ApiError,
  Category,
  KarmyqClient,
  KarmyqEvent,
  NotificationKind,
  RequestKind,
  SyncState,
  Urgency,
  Visibility,
  karmyqVersion,
  type CommunityId,
  type KarmyqListener,
  type ListenerHandleLike,
  type RequestId,
} from "../../react-native/ts/karmyq_ffi";

/** What the calls saw (React Native has a console; these typings do not). */
export const seen: unknown[] = [];

export function story(dataDir: string, url: string): ListenerHandleLike {
  const version: string = karmyqVersion();
  const client = KarmyqClient.open(dataDir);
  const listener: KarmyqListener = {
    onEvent(event: KarmyqEvent): void {
      if (KarmyqEvent.Notified.instanceOf(event)) {
        const kind: NotificationKind = event.inner.notification.kind;
        seen.push(version, kind === NotificationKind.OfferAccepted);
      } else if (KarmyqEvent.SyncStatusChanged.instanceOf(event)) {
        seen.push(SyncState.UpToDate.instanceOf(event.inner.status));
      }
    },
  };
  const handle = client.subscribe(listener);
  const community: CommunityId = client.createCommunity("Elm Street", "", Visibility.Public);
  client.startSync(url, community);
  const request: RequestId = client.postRequest([community], {
    title: "Move a sofa",
    description: "Two floors down",
    category: Category.Moving,
    urgency: Urgency.High,
    kind: RequestKind.Generic,
  });
  const bytes: ArrayBuffer = client.exportCommunity(community);
  seen.push(bytes.byteLength, client.karma(community, client.memberId()) > 0);
  try {
    client.offerHelp(community, request, "me");
  } catch (e) {
    if (ApiError.Rejected.instanceOf(e)) {
      const code: string = e.inner.code;
      seen.push(code, e.inner.detail);
    }
  }
  client.setClock(client.now() + 1000n);
  return handle;
}
