"""Built-in tools: calculator, web_search, browser."""
