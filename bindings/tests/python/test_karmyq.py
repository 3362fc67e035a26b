"""Karmyq from Python, through the generated bindings: a round trip, the
whole mutual-aid story between two devices through a real sync server,
listeners, and errors with their stable codes. The Rust tests prove the
rules; these prove the surface works across the FFI."""

import queue
import time

import pytest

from conftest import PATIENCE, wait_until


class Events:
    """A listener that queues every event for the test to read."""

    def __init__(self):
        self.queue = queue.Queue()

    def on_event(self, event):
        self.queue.put(event)

    def expect(self, what, want):
        """Waits for an event matching `want`, skipping others."""
        deadline = time.monotonic() + PATIENCE
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no event: {what}")
            try:
                event = self.queue.get(timeout=left)
            except queue.Empty:
                pytest.fail(f"no event: {what}")
            if want(event):
                return event


def sofa(karmyq):
    return karmyq.RequestDraft(
        title="Move a sofa",
        description="Two floors down",
        category=karmyq.Category.MOVING,
        urgency=karmyq.Urgency.HIGH,
        kind=karmyq.RequestKind.GENERIC,
        location=None,
        when_from=None,
        when_until=None,
    )


def test_a_round_trip(karmyq, device):
    assert karmyq.karmyq_version() == "0.1.0"
    client = device("alice")
    community = client.create_community("Elm Street", "Neighbours", karmyq.Visibility.PUBLIC)
    assert [c.id for c in client.communities()] == [community]
    request = client.post_request([community], sofa(karmyq))
    view = client.request(community, request)
    assert view.draft == sofa(karmyq)
    assert view.requester == client.member_id()
    assert view.status == karmyq.RequestStatus.OPEN


def test_two_devices_help_each_other_through_a_server(karmyq, server, device):
    Event = karmyq.KarmyqEvent
    alice, bob = device("alice"), device("bob")
    alice_events, bob_events = Events(), Events()
    alice_handle = alice.subscribe(alice_events)
    bob_handle = bob.subscribe(bob_events)

    # A match earns karma only 15 minutes after its acceptance: both clocks
    # start 20 minutes in the past and return to the present before the
    # confirmations.
    start = alice.now() - 20 * 60 * 1000
    alice.set_clock(start)
    bob.set_clock(start)

    community = alice.create_community("Elm Street", "", karmyq.Visibility.PUBLIC)
    report = bob.receive(alice.export_community(community))
    assert report.community == community and report.rejected == []
    assert [c.id for c in bob.communities()] == [community]
    bob.join(community)
    alice.start_sync(server, community)
    bob.start_sync(server, community)
    assert bob.syncing() == [community]
    bob_events.expect(
        "bob up to date",
        lambda e: isinstance(e, Event.SYNC_STATUS_CHANGED) and e.status.is_UP_TO_DATE(),
    )
    alice_events.expect(
        "bob joined, at alice's",
        lambda e: isinstance(e, Event.MEMBER_JOINED) and e.member == bob.member_id(),
    )

    request = alice.post_request([community], sofa(karmyq))
    bob_events.expect(
        "the request at bob's",
        lambda e: isinstance(e, Event.REQUEST_CREATED) and e.request == request,
    )
    offer = bob.offer_help(community, request, "I have a van")
    alice_events.expect(
        "bob's offer at alice's",
        lambda e: isinstance(e, Event.OFFER_RECEIVED) and e.offer == offer,
    )
    alice.accept_offer(community, request, offer)
    notified = bob_events.expect(
        "the acceptance, notified to bob",
        lambda e: isinstance(e, Event.NOTIFIED)
        and e.notification.kind == karmyq.NotificationKind.OFFER_ACCEPTED,
    )
    assert notified.notification.request == request
    assert notified.notification.actor == alice.member_id()

    alice.set_clock(None)
    bob.set_clock(None)
    bob.confirm_match(community, request, None)
    alice.confirm_match(community, request, "Thank you!")
    wait_until("bob's karma at alice's", lambda: alice.karma(community, bob.member_id()) > 0)
    assert alice.request(community, request).status == karmyq.RequestStatus.COMPLETED

    chat = alice.open_conversation(community, bob.member_id())
    alice.send_message(community, chat, "See you at six")
    bob_events.expect(
        "the message at bob's",
        lambda e: isinstance(e, Event.MESSAGE_RECEIVED) and e.conversation == chat,
    )
    messages = bob.messages(community, chat, None, 10)
    assert messages[-1].body == "See you at six"
    assert messages[-1].sender == alice.member_id()
    assert bob.unread_messages(community) == 1

    alice.stop_sync(community)
    assert alice.syncing() == []
    alice_handle.cancel()
    bob_handle.cancel()


def test_failures_carry_their_category_and_code(karmyq, device):
    ApiError = karmyq.ApiError
    client = device("alice")
    community = client.create_community("Pine Court", "", karmyq.Visibility.PUBLIC)
    request = client.post_request([community], sofa(karmyq))

    with pytest.raises(ApiError.Rejected) as own:
        client.offer_help(community, request, "me")
    assert own.value.code == "illegal_transition"
    assert own.value.detail

    with pytest.raises(ApiError.InvalidInput) as bad_id:
        client.community_info("not-an-id")
    assert bad_id.value.code == "invalid_id"

    with pytest.raises(ApiError.InvalidInput) as bad_bytes:
        client.receive(b"not a bundle")
    assert bad_bytes.value.code == "malformed"

    with pytest.raises(ApiError.NotFound) as no_sync:
        client.join_requests(community)
    assert no_sync.value.code == "no_sync"

    client.close()
    with pytest.raises(ApiError.Closed) as closed:
        client.communities()
    assert closed.value.code == "closed"
