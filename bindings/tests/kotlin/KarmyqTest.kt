// Karmyq from Kotlin on the JVM (JNA), through the generated bindings:
// a round trip, an error with its stable code, a listener callback.
// Prints `kotlin: N passed, N failed` and exits 1 on any failure.

import java.nio.file.Files
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import uniffi.karmyq_ffi.*

class Events : KarmyqListener {
    val queue = LinkedBlockingQueue<KarmyqEvent>()

    override fun onEvent(event: KarmyqEvent) {
        queue.put(event)
    }

    /** Waits up to 20 s for an event matching [want], skipping others. */
    fun expect(what: String, want: (KarmyqEvent) -> Boolean): KarmyqEvent {
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20)
        while (true) {
            val left = deadline - System.nanoTime()
            val event = if (left > 0) queue.poll(left, TimeUnit.NANOSECONDS) else null
            if (event == null) throw AssertionError("no event: $what")
            if (want(event)) return event
        }
    }
}

fun check(condition: Boolean, what: String) {
    if (!condition) throw AssertionError(what)
}

fun sofa() = RequestDraft(
    title = "Move a sofa",
    description = "Two floors down",
    category = Category.MOVING,
    urgency = Urgency.HIGH,
    kind = RequestKind.GENERIC,
    location = null,
    whenFrom = null,
    whenUntil = null,
)

fun device(): KarmyqClient =
    KarmyqClient.open(Files.createTempDirectory("karmyq-kotlin").toString())

fun roundTrip() {
    check(karmyqVersion() == "0.1.0", "version")
    val client = device()
    val community = client.createCommunity("Elm Street", "Neighbours", Visibility.PUBLIC)
    check(client.communities().map { it.id } == listOf(community), "communities")
    val request = client.postRequest(listOf(community), sofa())
    val view = client.request(community, request)
    check(view.draft == sofa(), "the draft read back: ${view.draft}")
    check(view.requester == client.memberId(), "requester")
    check(view.status == RequestStatus.OPEN, "status ${view.status}")
    client.shutdown()
}

fun errorsCarryTheirCode() {
    val client = device()
    val community = client.createCommunity("Pine Court", "", Visibility.PUBLIC)
    val request = client.postRequest(listOf(community), sofa())
    try {
        client.offerHelp(community, request, "me")
        throw AssertionError("offering on one's own request succeeded")
    } catch (e: ApiException.Rejected) {
        check(e.code == "illegal_transition", "code ${e.code}")
    }
    try {
        client.communityInfo("not-an-id")
        throw AssertionError("a malformed id was taken")
    } catch (e: ApiException.InvalidInput) {
        check(e.code == "invalid_id", "code ${e.code}")
    }
    client.shutdown()
    try {
        client.communities()
        throw AssertionError("a closed client answered")
    } catch (e: ApiException.Closed) {
        check(e.code == "closed", "code ${e.code}")
    }
}

fun listenerHearsEvents() {
    val client = device()
    val events = Events()
    val handle = client.subscribe(events)
    val community = client.createCommunity("Oak Lane", "", Visibility.PUBLIC)
    val request = client.postRequest(listOf(community), sofa())
    val event = events.expect("the request created") {
        it is KarmyqEvent.RequestCreated && it.request == request
    } as KarmyqEvent.RequestCreated
    check(event.community == community, "the event's community")
    handle.cancel()
    client.shutdown()
}

fun main() {
    val tests = listOf(
        "a round trip" to ::roundTrip,
        "errors carry their code" to ::errorsCarryTheirCode,
        "a listener hears events" to ::listenerHearsEvents,
    )
    var passed = 0
    var failed = 0
    for ((name, test) in tests) {
        try {
            test()
            println("ok: $name")
            passed++
        } catch (e: Throwable) {
            println("FAILED: $name: $e")
            e.printStackTrace()
            failed++
        }
    }
    println("kotlin: $passed passed, $failed failed")
    kotlin.system.exitProcess(if (failed == 0) 0 else 1)
}
