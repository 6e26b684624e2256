/* Context-free grammars for constrained decoding: a grammar in llama.cpp's
 * GBNF syntax is parsed and checked once, then a matcher follows a
 * generation code point by code point, and per step gives the set of
 * vocabulary tokens that keep the text inside the grammar (the mask the
 * sampler applies before it picks).
 *
 * GBNF, as llama.cpp reads it:
 *   rule-name ::= alternative | alternative ...      (one rule per definition;
 *                                                     "root" is where text starts)
 *   "literal" with \n \r \t \\ \" \xHH \uHHHH \UHHHHHHHH escapes
 *   [a-z_] [^"\\] character classes (ranges, negation, the same escapes)
 *   .  any character      ( ... ) grouping      # comment to the end of line
 *   x* x+ x? x{m} x{m,} x{m,n}  repetition (n at most HERD_GRAMMAR_MAX_REPEAT)
 * Rule names are [a-zA-Z0-9-]+. A rule that is used and not defined, a
 * missing root, and left recursion (a rule reaching itself before any
 * character is read, which no matcher can follow) are errors that name the
 * rule, as are limits exceeded.
 *
 * The matcher's state is the set of parse stacks still alive (a
 * pushdown automaton's configurations, as llama.cpp's grammar sampler
 * keeps them) plus the bytes of a character not yet complete, so tokens
 * that split a UTF-8 sequence are followed exactly. The mask walks a byte
 * trie of the vocabulary once, sharing the work of common prefixes and
 * dropping a whole subtree as soon as no stack survives its prefix.
 *
 * A grammar and a vocabulary trie are immutable once built and may be
 * shared by threads; a state belongs to one sequence. */
#ifndef HERD_SAMPLING_GRAMMAR_H
#define HERD_SAMPLING_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herd/status.h"

/* Limits on what a grammar may make the matcher do (each a clear error
 * rather than unbounded memory): the source size, the compiled elements
 * (a {m,n} repetition is unrolled), repetition counts, and the stacks a
 * state may hold (an ambiguous grammar multiplies them). */
#define HERD_GRAMMAR_MAX_SOURCE   (1u << 20)
#define HERD_GRAMMAR_MAX_ELEMENTS (1u << 20)
#define HERD_GRAMMAR_MAX_REPEAT   1000
#define HERD_GRAMMAR_MAX_STACKS   4096
#define HERD_GRAMMAR_MAX_DEPTH    512

struct herd_grammar;

/* Parses and checks a GBNF text of n bytes. On error *out is NULL and err
 * names the line, the column and what was expected. Free with
 * herd_grammar_destroy. */
enum herd_status herd_grammar_parse(const char *text, size_t n, struct herd_grammar **out, struct herd_error *err);

/* A grammar is shared by reference: retain adds one (the grammar is
 * immutable, so holders on any thread may use it), destroy drops one and
 * frees it with the last. NULL is a no-op for both. */
struct herd_grammar *herd_grammar_retain(struct herd_grammar *g);
void herd_grammar_destroy(struct herd_grammar *g);

/* JSON mode's grammar (OpenAI's response_format json_object: one JSON
 * object, with bounded whitespace so that a model cannot fill its tokens
 * with blanks). */
extern const char herd_grammar_json_object[];

/* A hash of the grammar's text: grammars parsed from the same text have
 * the same rules and element positions, so their states (and masks) are
 * interchangeable. */
uint64_t herd_grammar_fingerprint(const struct herd_grammar *g);

/* Rules after repetitions were expanded (for tests and limits). */
uint32_t herd_grammar_n_rules(const struct herd_grammar *g);

/* ------------------------------------------------------------- the matcher */

struct herd_grammar_state;

/* A state at the start of the root rule. NULL with err on out of memory. */
struct herd_grammar_state *herd_grammar_state_create(const struct herd_grammar *g, struct herd_error *err);
struct herd_grammar_state *herd_grammar_state_clone(const struct herd_grammar_state *s);
void herd_grammar_state_destroy(struct herd_grammar_state *s);

/* Feeds n bytes of generated text. HERD_OK when the grammar allows them
 * (the state moves on); HERD_E_INVALID when it does not, or the bytes are
 * not UTF-8 (the state is then unchanged); HERD_E_NOMEM when the grammar is
 * so ambiguous that the stacks exceed HERD_GRAMMAR_MAX_STACKS. */
enum herd_status herd_grammar_accept(struct herd_grammar_state *s, const char *bytes, size_t n, struct herd_error *err);

/* True when the text so far is a whole sentence of the grammar (end of
 * generation is allowed here). */
bool herd_grammar_can_end(const struct herd_grammar_state *s);

/* True when no character at all may follow (the grammar is complete and
 * allows nothing more: only ending is left). */
bool herd_grammar_must_end(const struct herd_grammar_state *s);

/* --------------------------------------------------------------- the mask */

/* The vocabulary as the mask sees it: each token's bytes (herd_vocab_piece)
 * in a trie, and which tokens end generation. */
struct herd_grammar_vocab;

/* pieces[i] / lens[i]: token i's bytes; a token with no bytes (a control
 * token) can never be produced inside a grammar. eog[i]: token i ends
 * generation (allowed exactly when herd_grammar_can_end). The arrays are
 * copied. */
enum herd_status herd_grammar_vocab_create(const char *const *pieces, const uint32_t *lens, const bool *eog,
                                           uint32_t n_tokens, struct herd_grammar_vocab **out, struct herd_error *err);
void herd_grammar_vocab_destroy(struct herd_grammar_vocab *v);

/* 64-bit words of a mask over the vocabulary: bit i of word i / 64 is
 * token i. */
size_t herd_grammar_mask_words(const struct herd_grammar_vocab *v);

/* Sets the bit of every token the grammar accepts next in state s in
 * allowed[herd_grammar_mask_words(v)], clears the others; returns how many
 * are allowed. The state is not changed. Walks the trie: milliseconds on a
 * large vocabulary; herd_grammar_mask_cached is what a sampler calls. */
uint32_t herd_grammar_mask(const struct herd_grammar_state *s, const struct herd_grammar_vocab *v, uint64_t *allowed);

/* Masks of recent states, for one vocabulary: a generation meets the same
 * state again and again (every character inside a JSON string leaves the
 * parse stacks as they were), so most steps are a lookup. Least recently
 * used entries make room. Not thread-safe: one per sequence or thread. */
struct herd_grammar_mask_cache;

/* capacity: states kept (each holds a copy of its state and a mask of
 * n_tokens bits). NULL on out of memory. */
struct herd_grammar_mask_cache *herd_grammar_mask_cache_create(const struct herd_grammar_vocab *v, uint32_t capacity);
void herd_grammar_mask_cache_destroy(struct herd_grammar_mask_cache *c);

/* The mask of s (herd_grammar_mask_words words), computed on a miss; valid
 * until the next call on c. *n_allowed: its bits set. NULL on out of memory. */
const uint64_t *herd_grammar_mask_cached(struct herd_grammar_mask_cache *c, const struct herd_grammar_state *s,
                                         uint32_t *n_allowed);

/* Lookups answered from the cache and computed, since it was created. */
void herd_grammar_mask_cache_stats(const struct herd_grammar_mask_cache *c, uint64_t *hits, uint64_t *misses);

#endif
