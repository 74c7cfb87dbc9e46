"""Web UI and HTTP API: `cinegen serve`.

Modules (import what you need; nothing here imports gradio or FastAPI until it is used):
    service    GenerationService: validation, job queue, prompt enhancing, history (what both front ends call)
    jobs       bounded job queue with one worker thread per model
    history    on-disk history of results (JSON lines + media, atomic writes)
    enhance    prompt enhancers: built-in Shapes rewriter, OpenAI-compatible endpoint, local LLM folder
    longvideo  videos longer than the native clip (overlapping temporal windows)
    server     FastAPI app (the HTTP API) with the UI mounted at /
    ui         the gradio page
    browser    headless-Chromium driver for the end-to-end test and the README screenshot
    cli        `cinegen serve`
"""
