"""One of each helper the tests share: a free port, waiting for a condition, a task body, an agent over HTTP, the
fixed demo picture (`fixed`, which the screenshot script draws too)."""
