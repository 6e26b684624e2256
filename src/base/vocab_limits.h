/* Caps on a vocabulary (the tokenizer.ggml.tokens array of a GGUF file, or
 * a Hugging Face tokenizer.json) that the model describer, the tokenizer and
 * the converters all apply. They live in base because the tokenizer and the
 * model sit beside each other and neither may include the other, yet both
 * must agree on what a well-formed vocabulary is. */
#ifndef HERD_BASE_VOCAB_LIMITS_H
#define HERD_BASE_VOCAB_LIMITS_H

/* No real vocabulary has tokens this long; longer means a corrupt file. */
#define HERD_MAX_TOKEN_BYTES 4096u
/* Well above the largest released vocabularies (Gemma: 256k tokens). */
#define HERD_MAX_VOCAB       (1u << 22)

#endif
