// PYBIND11_MODULE(_core): the bindings, and the one translator from C++ failures to Python.
#include "proxy/child_server.h"
#include "proxy/connection.h"
#include "runtime/child_main.h"
#include "runtime/fork_server.h"
#include "runtime/peer_text.h"
#include "runtime/memory_limit.h"
#include "runtime/startup_failure.h"
#include "proxy/endpoint.h"
#include "proxy/proxy_object.h"
#include "runtime/termination.h"

#include <capnp/schema.h>
#include <kj/exception.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <signal.h>

namespace py = pybind11;

namespace {

py::object errorsModule() { return py::module_::import("process_isolation.errors"); }

py::object optionalInt(const std::optional<int>& value) {
  return value ? py::object(py::int_(*value)) : py::object(py::none());
}

py::object optionalText(const std::string& text) {
  return text.empty() ? py::object(py::none()) : py::object(py::str(text));
}

// Fields of a Termination as keyword arguments for process_isolation.errors.
py::dict terminationFields(const pi::Termination& t) {
  py::dict fields;
  fields["pid"] = t.pid;
  fields["exit_code"] = optionalInt(t.exitCode);
  fields["signal"] = optionalInt(t.signal);
  fields["signal_name"] = t.signal ? py::object(py::str(pi::signalName(*t.signal)))
                                   : py::object(py::none());
  fields["core_dumped"] = t.coreDumped;
  fields["child_traceback"] = optionalText(t.childTraceback);
  fields["native_traceback"] = optionalText(t.nativeTraceback);
  fields["reason"] = optionalText(t.reason);
  fields["ending"] = t.describeEnding();
  fields["stdout_tail"] = optionalText(t.stdoutTail);
  fields["stderr_tail"] = optionalText(t.stderrTail);
  return fields;
}

// The one place where C++ failures become Python exceptions.
void translate(std::exception_ptr failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const pi::TerminationError& error) {
    py::dict fields = terminationFields(error.termination());
    fields["call"] = optionalText(error.call());
    fields["detail"] = optionalText(error.detail());
    const char* name = "ProcessTerminationError";
    if (error.kind() == pi::TerminationError::Kind::kTimeout) name = "CallTimeoutError";
    if (error.kind() == pi::TerminationError::Kind::kProtocol) name = "ProtocolError";
    py::object cls = errorsModule().attr(name);
    py::object instance = cls(**fields);
    PyErr_SetObject(cls.ptr(), instance.ptr());
  } catch (const pi::ClientStateError& error) {
    py::object cls = errorsModule().attr("ClientStateError");
    PyErr_SetObject(cls.ptr(), cls(error.what()).ptr());
  } catch (const kj::Exception& error) {
    // The description may quote what the child sent.
    std::string text = pi::peerText(error.getDescription().cStr());
    switch (error.getType()) {
      case kj::Exception::Type::OVERLOADED:
        PyErr_SetString(PyExc_TimeoutError, text.c_str());
        break;
      case kj::Exception::Type::DISCONNECTED:
        PyErr_SetString(PyExc_ConnectionError, text.c_str());
        break;
      case kj::Exception::Type::UNIMPLEMENTED:
        PyErr_SetString(PyExc_NotImplementedError, text.c_str());
        break;
      default:
        PyErr_SetString(PyExc_RuntimeError, text.c_str());
        break;
    }
  }
}

pi::OutputSpec outputSpec(const std::string& mode, const std::string& path) {
  pi::OutputSpec spec;
  if (mode == "inherit") {
    spec.mode = pi::OutputSpec::Mode::kInherit;
  } else if (mode == "capture") {
    spec.mode = pi::OutputSpec::Mode::kCapture;
  } else if (mode == "file") {
    spec.mode = pi::OutputSpec::Mode::kFile;
    spec.path = path;
  } else {
    throw py::value_error("output mode must be 'inherit', 'capture' or 'file'");
  }
  return spec;
}

pi::Endpoint& endpointOfProxy(py::handle proxy) {
  if (!pi::isProxy(proxy)) throw py::type_error("expected a proxy of an isolated object");
  return *pi::proxyEndpoint(proxy);
}

py::object callByRequest(pi::Endpoint& endpoint, pi::wire::Op op, uint64_t target,
                         const std::string& name, py::tuple args, py::dict kwargs,
                         const std::string& description) {
  std::vector<PyObject*> values;
  for (auto arg : args) values.push_back(arg.ptr());
  py::tuple kwnames(kwargs.size());
  size_t i = 0;
  for (auto item : kwargs) {
    kwnames[i++] = item.first;
    values.push_back(item.second.ptr());
  }
  pi::CallArgs callArgs{values.data(), args.size(), kwargs.size() ? kwnames.ptr() : nullptr};
  double seconds = pi::threadTimeout() >= 0 ? pi::threadTimeout() : endpoint.defaultTimeout();
  try {
    return endpoint.request(op, target, name, callArgs, pi::Deadline::afterOrNever(seconds));
  } catch (pi::TerminationError& error) {
    error.setCall(description);
    endpoint.noteLostDuring(error.call());
    throw;
  }
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "The C++ core of process_isolation. Use the process_isolation package instead.";
  py::register_exception_translator(&translate);

  PyTypeObject* proxyType = pi::readyProxyBaseType();
  m.add_object("Proxy", py::handle(reinterpret_cast<PyObject*>(proxyType)));

  py::class_<pi::ForkServerClient, std::shared_ptr<pi::ForkServerClient>>(m, "ForkServer")
      .def_static(
          "start",
          [](std::vector<std::string> argv, double startTimeout) {
            py::gil_scoped_release nogil;
            return pi::ForkServerClient::start(argv, startTimeout);
          },
          py::arg("argv"), py::arg("start_timeout") = 60.0)
      .def_property_readonly("pid", &pi::ForkServerClient::serverPid)
      .def_property_readonly("alive", &pi::ForkServerClient::alive);
  m.attr("FORK_SERVER_CONTROL_FD") = pi::kForkServerControlFd;
  m.def(
      "run_fork_server",
      [](int parentPid, bool deathSignal, py::object childMain) {
        pi::prepareToFork();  // once for all the server's children
        pi::runForkServer(pi::kForkServerControlFd, parentPid, deathSignal,
                          [&](const std::string& options, const pi::ChildSetup& setup) {
                            // In the new child: the bootstrap comes from the options.
                            py::object bootstrap;
                            try {
                              bootstrap = childMain(py::bytes(options));
                            } catch (py::error_already_set& error) {
                              pi::reportBootstrapFailure(error);
                              ::_exit(pi::kStartupBootstrapFailed);
                            }
                            pi::ChildServer server(std::move(bootstrap));
                            pi::runChild(setup, server);
                          });
      },
      "Runs the fork server loop in this (spawned) process; never returns.");

  py::class_<pi::Connection>(m, "Connection")
      .def_static(
          "start",
          [](py::object bootstrap, double startTimeout, const std::string& stdoutMode,
             const std::string& stdoutPath, const std::string& stderrMode,
             const std::string& stderrPath, bool sharedMemory, bool parentSpans) {
            return pi::Connection::start(std::move(bootstrap), startTimeout,
                                         outputSpec(stdoutMode, stdoutPath),
                                         outputSpec(stderrMode, stderrPath), sharedMemory,
                                         parentSpans);
          },
          py::arg("bootstrap"), py::arg("start_timeout") = 60.0,
          py::arg("stdout_mode") = "inherit", py::arg("stdout_path") = "",
          py::arg("stderr_mode") = "inherit", py::arg("stderr_path") = "",
          py::arg("shared_memory") = true, py::arg("parent_spans") = true,
          "Forks a child that runs bootstrap() and then serves; waits for it.")
      .def_static(
          "spawn",
          [](std::vector<std::string> argv, double startTimeout, const std::string& stdoutMode,
             const std::string& stdoutPath, const std::string& stderrMode,
             const std::string& stderrPath, bool sharedMemory, bool parentSpans) {
            return pi::Connection::spawn(argv, startTimeout, outputSpec(stdoutMode, stdoutPath),
                                         outputSpec(stderrMode, stderrPath), sharedMemory,
                                         parentSpans);
          },
          py::arg("argv"), py::arg("start_timeout") = 60.0, py::arg("stdout_mode") = "inherit",
          py::arg("stdout_path") = "", py::arg("stderr_mode") = "inherit",
          py::arg("stderr_path") = "", py::arg("shared_memory") = true,
          py::arg("parent_spans") = true,
          "Starts argv (a fresh interpreter running process_isolation._spawn) as the child.")
      .def_static(
          "via_fork_server",
          [](std::shared_ptr<pi::ForkServerClient> server, const std::string& options,
             double startTimeout, const std::string& stdoutMode, const std::string& stdoutPath,
             const std::string& stderrMode, const std::string& stderrPath, bool sharedMemory,
             bool parentSpans) {
            return pi::Connection::viaForkServer(std::move(server), options, startTimeout,
                                                 outputSpec(stdoutMode, stdoutPath),
                                                 outputSpec(stderrMode, stderrPath), sharedMemory,
                                                 parentSpans);
          },
          py::arg("server"), py::arg("options"), py::arg("start_timeout") = 60.0,
          py::arg("stdout_mode") = "inherit", py::arg("stdout_path") = "",
          py::arg("stderr_mode") = "inherit", py::arg("stderr_path") = "",
          py::arg("shared_memory") = true, py::arg("parent_spans") = true,
          "Has the fork server fork the child.")
      .def("output_tail", &pi::Connection::outputTail, py::arg("stream"), py::arg("lines") = 50)
      .def_property_readonly("pid", &pi::Connection::pid)
      .def_property_readonly("alive", &pi::Connection::alive)
      .def_property_readonly("transport",
                             [](pi::Connection& c) {
                               return c.endpoint()->usesSharedRings() ? "shm" : "socket";
                             })
      .def_property_readonly(
          "parent_spans", [](pi::Connection& c) { return c.endpoint()->sendsSpans(); },
          "True while large bytes go to the child as spans of the parent's memory.")
      .def_property(
          "deny_private", [](pi::Connection& c) { return c.endpoint()->deniesPrivate(); },
          [](pi::Connection& c, bool deny) { c.endpoint()->setDenyPrivate(deny); },
          "True: the child is confined, and may not use private attributes of parent objects "
          "nor look inside parent modules (set before the first call).")
      .def("pinned_spans", [](pi::Connection& c) { return c.endpoint()->pinnedSpans(); },
           "How many spans of its memory the parent holds for the child right now.")
      .def("sent_buffers",
           [](pi::Connection& c) {
             py::dict counts;
             counts["spans"] = c.endpoint()->spansSent();
             counts["memfds"] = c.endpoint()->memfdsSent();
             return counts;
           },
           "How many large values the parent has sent the child as spans and in memfds.")
      .def_property_readonly("termination",
                             [](pi::Connection& c) -> py::object {
                               if (!c.termination()) return py::none();
                               return terminationFields(*c.termination());
                             })
      .def("terminate", &pi::Connection::terminate, py::arg("grace") = 1.0)
      .def_property(
          "default_timeout", [](pi::Connection& c) { return c.endpoint()->defaultTimeout(); },
          [](pi::Connection& c, double seconds) { c.endpoint()->setDefaultTimeout(seconds); })
      .def("import_module",
           [](pi::Connection& c, const std::string& name, py::list paths) {
             py::object module = callByRequest(*c.endpoint(), pi::wire::Op::IMPORT, 0, name,
                                               py::make_tuple(paths), py::dict(),
                                               "import_isolated('" + name + "')");
             if (pi::isProxy(module)) {
               pi::setProxyLabel(module, name);
               pi::setProxyIsModule(module);
             }
             return module;
           })
      .def("call_by_name",
           [](pi::Connection& c, const std::string& name, py::tuple args, py::dict kwargs) {
             std::string shown = name;
             std::replace(shown.begin(), shown.end(), ':', '.');
             return callByRequest(*c.endpoint(), pi::wire::Op::CALL_BY_NAME, 0, name, args,
                                  kwargs, shown + "(...)");
           })
      .def("interrupt", [](pi::Connection& c) { c.interruptPeer(); })
      .def("set_restart_hook",
           [](pi::Connection& c, py::object hook) {
             c.endpoint()->setRestartHook(hook.is_none() ? py::object() : hook);
           },
           "Called with a module proxy used after the child ended (restart='auto'); None for none.")
      .def("set_proxy_owner",
           [](pi::Connection& c, py::object owner) { c.endpoint()->setProxyOwner(owner); },
           "Every proxy made from now on keeps `owner` (the context) alive while it lives.")
      .def("frame_counts",
           [](pi::Connection& c) {
             // {'sent': {kind: frames}, 'received': {...}}, kinds named as in the schema.
             auto enumerants = capnp::Schema::from<pi::wire::Message>().getUnionFields();
             auto table = [&](const pi::Endpoint::FrameCounts& counts) {
               py::dict out;
               for (auto field : enumerants) {
                 size_t which = field.getProto().getDiscriminantValue();
                 if (which < counts.size()) out[field.getProto().getName().cStr()] = counts[which];
               }
               return out;
             };
             py::dict result;
             result["sent"] = table(c.endpoint()->sentFrames());
             result["received"] = table(c.endpoint()->receivedFrames());
             return result;
           })
      .def("export_count", [](pi::Connection& c) { return c.endpoint()->exportCount(); })
      .def("import_count", [](pi::Connection& c) { return c.endpoint()->importCount(); })
      .def("owns", [](pi::Connection& c, py::handle proxy) {
        return pi::isProxy(proxy) && pi::proxyEndpoint(proxy) == c.endpoint().get();
      });

  m.def(
      "serve_spawned",
      [](int parentPid, bool deathSignal, py::object bootstrap) {
        // In a spawned child: the fds are where Connection::spawn put them.
        pi::ChildSetup setup;
        setup.socketFd = pi::kSpawnSocketFd;
        setup.crashFd = pi::kSpawnCrashFd;
        setup.lifelineFd = pi::kSpawnLifelineFd;
        setup.deathSignal = deathSignal;
        setup.parentPid = parentPid;
        pi::ChildServer server(std::move(bootstrap));
        pi::runChild(setup, server);
      },
      "Runs the child's side in a spawned interpreter; never returns.");
  m.attr("SPAWN_SOCKET_FD") = pi::kSpawnSocketFd;
  m.def("apply_memory_limit", &pi::applyMemoryLimit, py::arg("added_bytes"),
        "In a child: limits its address space to what it maps now plus added_bytes; returns "
        "the limit set.");
  m.def("isproxy", [](py::handle object) { return pi::isProxy(object); },
        "True when the object is a proxy for an object in an isolated child.");
  m.def("drop_proxies", [](py::handle modules) { pi::dropProxiesFrom(modules); },
        "Deletes the entries of a dict (sys.modules) whose values are proxies, touching no "
        "other entry (cheap in a forked child: no copy-on-write of the pages it keeps).");
  m.def("pickled_copy",
        [](py::handle proxy) {
          pi::Endpoint& endpoint = endpointOfProxy(proxy);
          return callByRequest(endpoint, pi::wire::Op::BYVALUE, pi::proxyId(proxy), "",
                               py::tuple(), py::dict(), "byvalue(" + pi::proxyLabel(proxy) + ")");
        },
        "The pickle bytes of the remote object a proxy stands for.");
  m.def("proxy_label", [](py::handle proxy) {
    endpointOfProxy(proxy);
    return pi::proxyLabel(proxy);
  });
  m.def("adopt", [](py::handle old, py::handle fresh) {
    endpointOfProxy(old);
    endpointOfProxy(fresh);
    pi::adoptProxy(old, fresh);
  });
  m.def("thread_timeout", &pi::threadTimeout);
  m.def("set_thread_timeout", &pi::setThreadTimeout);
}
