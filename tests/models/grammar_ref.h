// grammar_ref.h - a grammar built in the test, printed as GBNF for the engine and matched
// by a slow, obviously-correct reference: the set of input positions where a node can
// end, starting from a position (memoized per rule and position). A special position
// PARTIAL means "ran out of input part-way through a node", so a text is a viable prefix
// exactly when the start rule reaches the end or PARTIAL. Grammars here are never
// left-recursive and every rule is productive (random_grammar guarantees both).
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace gref {

struct Node {
    enum Kind { EMPTY, LIT, CLS, SEQ, ALT, REP, REF } kind = EMPTY;
    std::string lit;                                 // LIT: bytes
    std::vector<std::pair<uint32_t, uint32_t>> rng;  // CLS: code point ranges
    bool neg = false;                                // CLS: negated
    std::vector<int> kids;                           // SEQ/ALT: nodes; REP: one node
    int min = 0, max = 0;                            // REP: bounds, max -1 unbounded
    int rule = -1;                                   // REF
};

inline std::string utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) s += (char)cp;
    else if (cp < 0x800) s += (char)(0xC0 | cp >> 6), s += (char)(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
        s += (char)(0xE0 | cp >> 12), s += (char)(0x80 | (cp >> 6 & 0x3F)), s += (char)(0x80 | (cp & 0x3F));
    else
        s += (char)(0xF0 | cp >> 18), s += (char)(0x80 | (cp >> 12 & 0x3F)),
            s += (char)(0x80 | (cp >> 6 & 0x3F)), s += (char)(0x80 | (cp & 0x3F));
    return s;
}

// Decodes one UTF-8 scalar at s[i..n): its length (0: invalid or incomplete) and value.
inline int decode(const std::string &s, size_t i, uint32_t *cp) {
    const unsigned char *p = (const unsigned char *)s.data() + i;
    size_t n = s.size() - i;
    if (n == 0) return 0;
    unsigned c = p[0], lo = 0x80, hi = 0xBF;
    int need;
    if (c < 0x80) return *cp = c, 1;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) need = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) need = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    if (n < (size_t)need) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int k = 2; k < need; k++)
        if ((p[k] & 0xC0) != 0x80) return 0;
    uint32_t v = c & (0xFF >> (need + 1));
    for (int k = 1; k < need; k++) v = v << 6 | (p[k] & 0x3F);
    *cp = v;
    return need;
}

// Code points whose encoding starts with the incomplete sequence s[i..n): [lo, hi], or
// false when no valid character starts so.
inline bool partial_range(const std::string &s, size_t i, uint32_t *lo_cp, uint32_t *hi_cp) {
    const unsigned char *p = (const unsigned char *)s.data() + i;
    size_t n = s.size() - i;
    unsigned c = p[0], lo2 = 0x80, hi2 = 0xBF;
    size_t need;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) need = 3, lo2 = c == 0xE0 ? 0xA0 : 0x80, hi2 = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) need = 4, lo2 = c == 0xF0 ? 0x90 : 0x80, hi2 = c == 0xF4 ? 0x8F : 0xBF;
    else return false;
    if (n >= need) return false;
    unsigned char a[4], b[4];
    for (size_t k = 0; k < need; k++) {
        if (k < n) {
            a[k] = b[k] = p[k];
            if (k == 1 && (p[k] < lo2 || p[k] > hi2)) return false;
            if (k >= 1 && (p[k] & 0xC0) != 0x80) return false;
        } else {
            a[k] = k == 1 ? lo2 : 0x80;
            b[k] = k == 1 ? hi2 : 0xBF;
        }
    }
    uint32_t x = a[0] & (0xFF >> (need + 1)), y = b[0] & (0xFF >> (need + 1));
    for (size_t k = 1; k < need; k++) x = x << 6 | (a[k] & 0x3F), y = y << 6 | (b[k] & 0x3F);
    *lo_cp = x, *hi_cp = y;
    return true;
}

struct Grammar {
    std::vector<Node> nodes;
    std::vector<int> body;  // rule -> node
    int add(Node n) {
        nodes.push_back(n);
        return (int)nodes.size() - 1;
    }

    bool in_class(const Node &x, uint32_t cp) const {
        bool in = false;
        for (auto &r : x.rng) in |= cp >= r.first && cp <= r.second;
        return in != x.neg;
    }
    bool class_meets(const Node &x, uint32_t lo, uint32_t hi) const {
        if (!x.neg) {
            for (auto &r : x.rng)
                if (r.first <= hi && r.second >= lo) return true;
            return false;
        }
        // a negated class meets [lo, hi] unless its ranges cover all of it
        for (uint32_t c = lo;;) {
            bool moved = false;
            for (auto &r : x.rng)
                if (r.first <= c && r.second >= c) c = r.second + 1, moved = true;
            if (!moved) return true;
            if (c > hi) return false;
        }
    }

    // ---- printing ----
    static std::string esc(uint32_t cp) {
        char buf[16];
        if (cp == '"' || cp == '\\' || cp == ']' || cp == '[' || cp == '-' || cp == '^') {
            buf[0] = '\\', buf[1] = (char)cp, buf[2] = 0;
            return buf;
        }
        if (cp < 0x20 || cp == 0x7F) {
            snprintf(buf, sizeof buf, "\\x%02X", cp);
            return buf;
        }
        return utf8(cp);
    }
    std::string print(int id) const {
        const Node &x = nodes[id];
        std::string s;
        switch (x.kind) {
        case Node::EMPTY: return "\"\"";
        case Node::LIT: {
            s = "\"";
            for (size_t i = 0; i < x.lit.size();) {
                uint32_t cp = 0;
                int k = decode(x.lit, i, &cp);
                s += esc(cp);
                i += k;
            }
            return s + "\"";
        }
        case Node::CLS:
            s = x.neg ? "[^" : "[";
            for (auto &r : x.rng) s += r.first == r.second ? esc(r.first) : esc(r.first) + "-" + esc(r.second);
            return s + "]";
        case Node::SEQ:
            s = "(";
            for (int k : x.kids) s += " " + print(k);
            return s + " )";
        case Node::ALT:
            s = "(";
            for (size_t i = 0; i < x.kids.size(); i++) s += (i ? " | " : " ") + print(x.kids[i]);
            return s + " )";
        case Node::REP:
            s = print(x.kids[0]);
            if (x.min == 0 && x.max == -1) return s + "*";
            if (x.min == 1 && x.max == -1) return s + "+";
            if (x.min == 0 && x.max == 1) return s + "?";
            if (x.max == -1) return s + "{" + std::to_string(x.min) + ",}";
            return s + "{" + std::to_string(x.min) + "," + std::to_string(x.max) + "}";
        case Node::REF: return "r" + std::to_string(x.rule);
        }
        return "";
    }
    std::string gbnf() const {
        std::string s = "root ::= r0\n";
        for (size_t r = 0; r < body.size(); r++) s += "r" + std::to_string(r) + " ::= " + print(body[r]) + "\n";
        return s;
    }

    // ---- the reference matcher ----
    struct Run {
        const Grammar *g;
        std::string in;
        int partial;  // = in.size() + 1
        std::map<std::pair<int, int>, std::set<int>> memo;
        std::set<std::pair<int, int>> busy;

        std::set<int> ends(int id, int pos) {
            if (pos == partial) return {partial};
            const Node &x = g->nodes[id];
            const int n = (int)in.size();
            std::set<int> out;
            switch (x.kind) {
            case Node::EMPTY: return {pos};
            case Node::LIT: {
                int k = 0, L = (int)x.lit.size();
                while (k < L && pos + k < n && in[pos + k] == x.lit[k]) k++;
                if (k == L) return {pos + L};
                if (pos + k == n) return {partial};  // a prefix of the literal, then the end
                return {};
            }
            case Node::CLS: {
                if (pos == n) return {partial};
                uint32_t cp;
                int k = decode(in, pos, &cp);
                if (k > 0) return g->in_class(x, cp) ? std::set<int>{pos + k} : std::set<int>{};
                uint32_t lo, hi;
                if (partial_range(in, pos, &lo, &hi) && g->class_meets(x, lo, hi)) return {partial};
                return {};
            }
            case Node::SEQ: {
                std::set<int> cur{pos};
                for (int k : x.kids) {
                    std::set<int> nxt;
                    for (int p : cur)
                        for (int e : ends(k, p)) nxt.insert(e);
                    cur.swap(nxt);
                    if (cur.empty()) break;
                }
                return cur;
            }
            case Node::ALT:
                for (int k : x.kids)
                    for (int e : ends(k, pos)) out.insert(e);
                return out;
            case Node::REP: {
                std::set<int> cur{pos}, seen;
                for (int c = 0;; c++) {
                    if (c >= x.min)
                        for (int p : cur) out.insert(p);
                    if ((x.max >= 0 && c >= x.max) || cur.empty()) break;
                    std::set<int> nxt;
                    for (int p : cur)
                        for (int e : ends(x.kids[0], p)) nxt.insert(e);
                    if (x.max < 0 && c >= x.min) { // unbounded: stop when nothing new appears
                        std::set<int> fresh;
                        for (int p : nxt)
                            if (!seen.count(p)) fresh.insert(p), seen.insert(p);
                        nxt.swap(fresh);
                    }
                    cur.swap(nxt);
                }
                return out;
            }
            case Node::REF: return rule_ends(x.rule, pos);
            }
            return out;
        }
        std::set<int> rule_ends(int rule, int pos) {
            if (pos == partial) return {partial};
            auto key = std::make_pair(rule, pos);
            auto it = memo.find(key);
            if (it != memo.end()) return it->second;
            if (busy.count(key)) return {};  // left recursion: never generated
            busy.insert(key);
            std::set<int> r = ends(g->body[rule], pos);
            busy.erase(key);
            memo[key] = r;
            return r;
        }
    };

    // 1: full match, 2: viable prefix only, 0: neither.
    int check(const std::string &s) const {
        Run run{this, s, (int)s.size() + 1, {}, {}};
        std::set<int> e = run.rule_ends(0, 0);
        if (e.count((int)s.size())) return 1;
        return e.count(run.partial) ? 2 : 0;
    }
};

// ---- random grammars ----

// The alphabet: ASCII, two- three- and four-byte characters.
inline const std::vector<uint32_t> &alphabet() {
    static const std::vector<uint32_t> a = {'a', 'b', 'c', '(', ')', ',', ' ', 0xE9, 0x20AC, 0x1F600};
    return a;
}

struct Gen {
    std::mt19937 rng;
    Grammar g;
    int n_rules;
    explicit Gen(uint32_t seed, int rules) : rng(seed), n_rules(rules) {}
    int pick(int n) { return (int)(rng() % (unsigned)n); }
    uint32_t ch() { return alphabet()[pick((int)alphabet().size())]; }

    int lit() {
        Node x;
        x.kind = Node::LIT;
        int n = 1 + pick(3);
        for (int i = 0; i < n; i++) x.lit += utf8(ch());
        return g.add(x);
    }
    int cls() {
        Node x;
        x.kind = Node::CLS;
        x.neg = pick(4) == 0;
        int n = 1 + pick(2);
        for (int i = 0; i < n; i++) {
            uint32_t a = ch(), b = pick(2) ? a : ch();
            if (b < a) std::swap(a, b);
            x.rng.push_back({a, b});
        }
        return g.add(x);
    }
    // A node of rule r. guarded: a literal was already matched in this sequence, so any
    // rule may be referenced (no left recursion); otherwise only rules below r.
    int node(int r, int depth, bool guarded, bool productive_only) {
        int k = pick(depth > 2 ? 3 : 7);
        if (k == 0) return lit();
        if (k == 1) return cls();
        if (k == 2) {
            if (guarded && !productive_only) {
                Node x;
                x.kind = Node::REF;
                x.rule = pick(n_rules);
                return g.add(x);
            }
            if (r + 1 < n_rules) {
                Node x;
                x.kind = Node::REF;
                x.rule = r + 1 + pick(n_rules - r - 1);
                return g.add(x);
            }
            return lit();
        }
        if (k == 3 || k == 4) {
            Node x;
            x.kind = Node::SEQ;
            int n = 2 + pick(2);
            bool gd = guarded;
            for (int i = 0; i < n; i++) {
                int c = i == 0 && pick(2) ? lit() : node(r, depth + 1, gd, productive_only);
                gd |= g.nodes[c].kind == Node::LIT;
                x.kids.push_back(c);
            }
            return g.add(x);
        }
        if (k == 5) {
            Node x;
            x.kind = Node::ALT;
            int n = 2 + pick(2);
            for (int i = 0; i < n; i++) x.kids.push_back(node(r, depth + 1, guarded, productive_only));
            return g.add(x);
        }
        Node x;
        x.kind = Node::REP;
        static const int b[][2] = {{0, -1}, {1, -1}, {0, 1}, {2, 3}, {0, 2}, {1, 4}};
        int w = pick(6);
        x.min = b[w][0], x.max = b[w][1];
        // a repeated node must not be nullable-and-recursive; a literal head keeps it simple
        Node s;
        s.kind = Node::SEQ;
        s.kids.push_back(lit());
        s.kids.push_back(node(r, depth + 1, true, productive_only));
        x.kids.push_back(g.add(s));
        return g.add(x);
    }
    // Rules reference higher-numbered rules freely, lower ones only behind a literal; the
    // first alternative of each rule uses no guarded reference, so every rule terminates.
    Grammar make() {
        g.body.assign(n_rules, -1);
        for (int r = n_rules - 1; r >= 0; r--) {
            Node alt;
            alt.kind = Node::ALT;
            alt.kids.push_back(node(r, 1, false, true));
            int more = pick(3);
            for (int i = 0; i < more; i++) alt.kids.push_back(node(r, 0, false, false));
            g.body[r] = g.add(alt);
        }
        return g;
    }
};

// A random sentence of g (bounded derivation depth: deep rules take their first
// alternative, which never recurses).
struct Sampler {
    const Grammar &g;
    std::mt19937 rng;
    Sampler(const Grammar &gr, uint32_t seed) : g(gr), rng(seed) {}
    void gen(int id, int depth, std::string &out) {
        const Node &x = g.nodes[id];
        switch (x.kind) {
        case Node::EMPTY: return;
        case Node::LIT: out += x.lit; return;
        case Node::CLS: {
            for (int tries = 0; tries < 100; tries++) {
                uint32_t c = alphabet()[rng() % alphabet().size()];
                if (g.in_class(x, c)) {
                    out += utf8(c);
                    return;
                }
            }
            // no alphabet character fits: try a few others (a class is never empty)
            static const uint32_t others[] = {0x4E2D, 0x1, 0x7F, 0x10FFFF, 0x1F601, 0xFFFD};
            if (!x.neg) {
                out += utf8(x.rng[0].first);
                return;
            }
            for (uint32_t c : others)
                if (g.in_class(x, c)) {
                    out += utf8(c);
                    return;
                }
            return;
        }
        case Node::SEQ:
            for (int k : x.kids) gen(k, depth, out);
            return;
        case Node::ALT: gen(x.kids[depth > 6 ? 0 : rng() % x.kids.size()], depth, out); return;
        case Node::REP: {
            int hi = x.max < 0 ? x.min + 3 : x.max;
            if (depth > 6) hi = x.min;
            int n = x.min + (hi > x.min ? (int)(rng() % (unsigned)(hi - x.min + 1)) : 0);
            for (int i = 0; i < n; i++) gen(x.kids[0], depth + 1, out);
            return;
        }
        case Node::REF: gen(g.body[x.rule], depth + 1, out); return;
        }
    }
    // Sentences longer than 40 bytes are drawn again (nested repetitions can explode).
    std::string sentence() {
        std::string s;
        for (int tries = 0; tries < 50; tries++) {
            s.clear();
            gen(g.body[0], 0, s);
            if (s.size() <= 40) return s;
        }
        return s;
    }
};

}  // namespace gref
