# Build reuse across `pip install` runs (docs/ARCHITECTURE.md, "Build"). pip installs the build requirements
# (pybind11, onednn-devel-cpu-gomp) into a new temporary folder for every isolated build, with new time stamps.
# Compiled against them in place, every object would name a folder that no longer exists and so be out of date
# on the next install. cnn_stage_files copies what the build uses from them into the build folder, comparing by
# content: a copy that did not change keeps its path and time stamp, so ninja has nothing to redo.
include_guard(GLOBAL)

# cnn_stage_files(<from> <to> <pattern>...): mirrors the files of the folder <from> that match the globs
# <pattern> (relative to <from>, recursive) into the folder <to>, at the same relative paths. A file is written
# only when its content differs from the copy already in <to> (then with a new time stamp, so what depends on it
# is rebuilt); files in <to> that no longer match are removed. A pattern that matches nothing is an error.
function(cnn_stage_files from to)
  if(CMAKE_VERSION VERSION_LESS 3.21)
    message(FATAL_ERROR "cnn_stage_files needs CMake 3.21 (file(COPY_FILE ... ONLY_IF_DIFFERENT)); this is ${CMAKE_VERSION}")
  endif()
  set(_keep "")
  foreach(_pattern IN LISTS ARGN)
    file(GLOB_RECURSE _found LIST_DIRECTORIES false RELATIVE "${from}" "${from}/${_pattern}")
    if(NOT _found)
      message(FATAL_ERROR "cnn_stage_files: nothing in ${from} matches '${_pattern}'")
    endif()
    list(APPEND _keep ${_found})
  endforeach()
  list(REMOVE_DUPLICATES _keep)
  foreach(_rel IN LISTS _keep)
    get_filename_component(_dir "${to}/${_rel}" DIRECTORY)
    file(MAKE_DIRECTORY "${_dir}")
    file(COPY_FILE "${from}/${_rel}" "${to}/${_rel}" ONLY_IF_DIFFERENT)
  endforeach()
  file(GLOB_RECURSE _have LIST_DIRECTORIES false RELATIVE "${to}" "${to}/*")
  foreach(_rel IN LISTS _have)
    if(NOT _rel IN_LIST _keep)
      file(REMOVE "${to}/${_rel}")
    endif()
  endforeach()
endfunction()

# cnn_stage_dnnl(<dnnl_DIR> <to> <out_var>): stages oneDNN's headers, its CMake package and the library its
# package imports (as it names it, e.g. lib/libdnnl.so.3.2) from the prefix <dnnl_DIR> lies in
# (<prefix>/lib/cmake/dnnl) into <to>, and sets <out_var> to the staged package folder (a new dnnl_DIR).
function(cnn_stage_dnnl dnnl_dir to out_var)
  get_filename_component(_prefix "${dnnl_dir}/../../.." ABSOLUTE)
  file(RELATIVE_PATH _cfg "${_prefix}" "${dnnl_dir}")
  # the files the package imports, relative to its prefix: "${_IMPORT_PREFIX}/lib/libdnnl.so.3.2"
  file(GLOB _targets "${dnnl_dir}/dnnl-targets-*.cmake")
  set(_libs "")
  foreach(_t IN LISTS _targets)
    file(STRINGS "${_t}" _lines REGEX "IMPORTED_LOCATION[A-Z_]* \"\\\${_IMPORT_PREFIX}/")
    foreach(_line IN LISTS _lines)
      string(REGEX REPLACE ".*\"\\\${_IMPORT_PREFIX}/([^\"]+)\".*" "\\1" _lib "${_line}")
      list(APPEND _libs "${_lib}")
    endforeach()
  endforeach()
  if(NOT _libs)
    message(FATAL_ERROR "oneDNN's CMake package in ${dnnl_dir} names no library (IMPORTED_LOCATION) to stage")
  endif()
  cnn_stage_files("${_prefix}" "${to}" "include/dnnl*.h" "include/dnnl*.hpp" "include/oneapi/dnnl/*"
                  "${_cfg}/*.cmake" ${_libs})
  set(${out_var} "${to}/${_cfg}" PARENT_SCOPE)
endfunction()

# cnn_stage_pybind11(<pybind11_DIR> <to> <out_var>): stages pybind11's headers and CMake package from the
# package folder <pybind11_DIR> lies in (<pkg>/share/cmake/pybind11) into <to>; <out_var>: the new pybind11_DIR.
function(cnn_stage_pybind11 pybind11_dir to out_var)
  get_filename_component(_pkg "${pybind11_dir}/../../.." ABSOLUTE)
  file(RELATIVE_PATH _cfg "${_pkg}" "${pybind11_dir}")
  cnn_stage_files("${_pkg}" "${to}" "include/pybind11/*" "${_cfg}/*.cmake")
  set(${out_var} "${to}/${_cfg}" PARENT_SCOPE)
endfunction()
