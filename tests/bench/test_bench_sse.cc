// The event-stream parser: events split across reads at every byte, line endings of
// all three kinds, comments and other fields skipped, limits enforced.
#include <gtest/gtest.h>

#include <string>
#include <vector>

extern "C" {
#include "bench/tmbench/sse.h"
#include "common/common.h"
}

namespace {

struct Sink {
    std::vector<std::string> events;
    int stop_at = -1;  // return nonzero on this event
};

int on_event(void *user, const char *data, size_t len) {
    Sink *s = static_cast<Sink *>(user);
    s->events.emplace_back(data, len);
    return (int)s->events.size() - 1 == s->stop_at ? 7 : 0;
}

std::vector<std::string> parse_in_pieces(const std::string &body, size_t piece, bool finish = true) {
    Sink sink;
    tm_sse p;
    tm_sse_init(&p, 1 << 20, on_event, &sink);
    for (size_t i = 0; i < body.size(); i += piece) {
        EXPECT_EQ(tm_sse_feed(&p, body.data() + i, std::min(piece, body.size() - i)), 0);
    }
    if (finish) {
        EXPECT_EQ(tm_sse_finish(&p), 0);
    }
    tm_sse_deinit(&p);
    return sink.events;
}

TEST(BenchSse, EventsSurviveAnySplit) {
    const std::string body =
        "data: {\"a\":1}\n\n"
        ": keep-alive comment\n\n"
        "event: message\r\nid: 3\r\ndata: {\"b\":2}\r\n\r\n"
        "data:no-space\r\rdata: line1\ndata: line2\n\n"
        "data: [DONE]\n\n";
    const std::vector<std::string> want = {"{\"a\":1}", "{\"b\":2}", "no-space", "line1\nline2", "[DONE]"};
    for (size_t piece = 1; piece <= body.size(); piece++) EXPECT_EQ(parse_in_pieces(body, piece), want) << piece;
}

TEST(BenchSse, CrlfSplitBetweenCrAndLfIsOneLineEnd) {
    // "\r" at the end of one read and "\n" at the start of the next must not end an
    // empty line (which would dispatch a half-built event early)
    Sink sink;
    tm_sse p;
    tm_sse_init(&p, 1 << 20, on_event, &sink);
    const char a[] = "data: x\r", b[] = "\ndata: y\r", c[] = "\n\r\n";
    ASSERT_EQ(tm_sse_feed(&p, a, sizeof a - 1), 0);
    ASSERT_EQ(tm_sse_feed(&p, b, sizeof b - 1), 0);
    ASSERT_EQ(tm_sse_feed(&p, c, sizeof c - 1), 0);
    tm_sse_deinit(&p);
    EXPECT_EQ(sink.events, std::vector<std::string>{"x\ny"});
}

TEST(BenchSse, UnterminatedLastEventIsDeliveredAtFinishOnly) {
    EXPECT_TRUE(parse_in_pieces("data: [DONE]", 5, false).empty());
    EXPECT_EQ(parse_in_pieces("data: [DONE]", 5, true), std::vector<std::string>{"[DONE]"});
    EXPECT_TRUE(parse_in_pieces(": only a comment", 3, true).empty());
}

TEST(BenchSse, CallbackCanStopTheParser) {
    Sink sink;
    sink.stop_at = 1;
    tm_sse p;
    tm_sse_init(&p, 1 << 20, on_event, &sink);
    const std::string body = "data: 0\n\ndata: 1\n\ndata: 2\n\n";
    EXPECT_EQ(tm_sse_feed(&p, body.data(), body.size()), 7);
    EXPECT_EQ(sink.events.size(), 2u);
    tm_sse_deinit(&p);
}

TEST(BenchSse, OverlongLineOrEventIsRefused) {
    Sink sink;
    tm_sse p;
    tm_sse_init(&p, 16, on_event, &sink);
    std::string line = "data: " + std::string(40, 'x');  // no line end: grows the partial line
    EXPECT_EQ(tm_sse_feed(&p, line.data(), line.size()), TM_ERANGE);
    tm_sse_reset(&p);
    const std::string many = "data: 0123456789\ndata: 0123456789\n";  // each line fits, the event not
    EXPECT_EQ(tm_sse_feed(&p, many.data(), many.size()), TM_ERANGE);
    tm_sse_deinit(&p);
    EXPECT_TRUE(sink.events.empty());
}

}  // namespace
