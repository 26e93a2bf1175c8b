"""One request, no torch: validation of the inputs, the prompt, the streamed text, the answer and its metrics."""
