// The proxy type: a CPython type whose instances each stand for one object of the peer.
#pragma once

#include <Python.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pi {

namespace py = pybind11;

class Endpoint;

// Readies the base proxy type. Call once, from the extension module's init, with the GIL held.
// Returns the type (a borrowed reference to a static type object).
PyTypeObject* readyProxyBaseType();

// A proxy type for one remote type: a subclass of the base carrying the special methods named by
// `specials` (indexes into kSpecialMethods) and no others, so that callable(), len(), iter(),
// operators and collections.abc checks answer as for the real object. `flags` are TypeInfo flags.
// `blocked` names special methods the remote type sets to None; the proxy type sets them to None
// too, so the interpreter refuses those operations as it would for the real object.
py::object makeProxyType(const std::string& qualname, const std::string& module,
                         const std::vector<int>& specials, const std::vector<int>& blocked,
                         uint32_t flags);

// A new proxy of `proxyType` for the peer object `id` on `endpoint`.
py::object newProxy(py::handle proxyType, std::shared_ptr<Endpoint> endpoint, uint64_t id);

bool isProxy(py::handle object);
// Deletes every entry of the dict `mapping` whose value is a proxy (sys.modules after a fork).
// Walks the dict without taking a reference to anything it keeps, so in a forked child it writes
// to no page it shares with its parent unless there is a proxy to delete: a walk that counted
// references would copy (COW) about two pages per entry. Raises TypeError for a non-dict.
// Needs the GIL; deleting a proxy may run finalizers.
void dropProxiesFrom(py::handle mapping);
// For a proxy: its endpoint and peer id. Undefined for other objects (check isProxy first).
Endpoint* proxyEndpoint(py::handle proxy);
std::shared_ptr<Endpoint> proxyEndpointShared(py::handle proxy);
uint64_t proxyId(py::handle proxy);
// A short name for what the proxy stands for ("buggy.dragons_here"), used in error reports.
std::string proxyLabel(py::handle proxy);
void setProxyLabel(py::handle proxy, const std::string& label);

// For a proxy of a batch-fetched iterator: how many fetched items it has not handed out yet.
// Taking the count gives them up (they travel back with the proxy, see Value.unread).
uint32_t takeProxyUnread(py::handle proxy);

// Marks a proxy as standing for a module (restart='auto' re-imports such proxies).
void setProxyIsModule(py::handle proxy);
// Re-points the module proxy `old` (of an ended child) to what `fresh` stands for, so existing
// references to `old` work again; `fresh` is left inert. Both must be proxies.
void adoptProxy(py::handle old, py::handle fresh);

// The per-thread timeout for calls (seconds, < 0 for none), set by process_isolation.timeout().
double threadTimeout();
void setThreadTimeout(double seconds);

}  // namespace pi
