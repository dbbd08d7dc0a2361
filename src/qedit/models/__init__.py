"""What every layer may know about models, without torch: the spec registry, detection of a
snapshot's variant from its ``model_index.json``, and the engine protocol (request, result, progress,
cancel). ``qedit.engine`` implements the protocol; the API, the service and the CLI import this
package and never ``qedit.engine`` (the worker alone loads it, when it first runs a task)."""
