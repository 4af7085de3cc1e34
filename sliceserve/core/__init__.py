"""The scheduling core: pure Python, no torch, no asyncio, no clock. Time is passed in as `now`."""
