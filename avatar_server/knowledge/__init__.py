"""Knowledge and avatar input helpers that need no store: token counting
(``tokens.count_tokens``) and reference image checks (``images.validate_reference_image``)."""
