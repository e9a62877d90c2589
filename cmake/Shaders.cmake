# Shader build: every entry of shaders/variants.def is compiled with
# glslangValidator, optimized with spirv-opt -O, validated with spirv-val and
# embedded as a C array (tools/spv2c.c). Variants needing a newer compiler
# tier than the available glslang supports are skipped with a message; the
# generated table marks them absent so vkpt picks another at run time.
#
# Produces: VKPT_SHADER_SOURCES (generated .c files to add to a target).

find_program(VKPT_GLSLANG glslangValidator REQUIRED)
find_program(VKPT_SPIRV_OPT spirv-opt REQUIRED)
find_program(VKPT_SPIRV_VAL spirv-val REQUIRED)
set(VKPT_NEW_SHADER_TOOLS "${PROJECT_SOURCE_DIR}/.deps/trixie/bin" CACHE PATH
    "Folder with a newer glslangValidator/spirv-opt/spirv-val (tools/setup-deps puts Debian 13's there)")

set(_shader_dir "${PROJECT_SOURCE_DIR}/shaders")
set(_gen_dir "${PROJECT_BINARY_DIR}/shaders")
file(MAKE_DIRECTORY "${_gen_dir}")

# Compiler candidates: the system's first, then the newer private one.
set(_tc_names SYS)
set(_tc_SYS_glslang "${VKPT_GLSLANG}")
set(_tc_SYS_opt "${VKPT_SPIRV_OPT}")
set(_tc_SYS_val "${VKPT_SPIRV_VAL}")
if(EXISTS "${VKPT_NEW_SHADER_TOOLS}/glslangValidator" AND EXISTS "${VKPT_NEW_SHADER_TOOLS}/spirv-opt"
   AND EXISTS "${VKPT_NEW_SHADER_TOOLS}/spirv-val")
  list(APPEND _tc_names NEW)
  set(_tc_NEW_glslang "${VKPT_NEW_SHADER_TOOLS}/glslangValidator")
  set(_tc_NEW_opt "${VKPT_NEW_SHADER_TOOLS}/spirv-opt")
  set(_tc_NEW_val "${VKPT_NEW_SHADER_TOOLS}/spirv-val")
endif()

# Tier -> toolchain, by compiling a probe shader per tier.
set(_tier_BASE SYS)
set(_tier_env_BASE vulkan1.2)
foreach(tier COOPMAT_KHR COOPMAT_NV2 INT_DOT SPV16)
  string(TOLOWER "${tier}" _probe)
  set(_tier_${tier} "")
  set(_tier_env_${tier} vulkan1.3)
  foreach(tc ${_tc_names})
    if(NOT _tier_${tier})
      execute_process(
        COMMAND "${_tc_${tc}_glslang}" -V --target-env vulkan1.3
                "${PROJECT_SOURCE_DIR}/cmake/probes/${_probe}.comp" -o "${_gen_dir}/probe_${_probe}.spv"
        RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
      if(_rc EQUAL 0)
        set(_tier_${tier} ${tc})
      endif()
    endif()
  endforeach()
  if(_tier_${tier})
    message(STATUS "vkpt shaders: tier ${tier} compiled with ${_tc_${_tier_${tier}}_glslang}")
  else()
    message(STATUS "vkpt shaders: tier ${tier} unavailable (no glslang here compiles it); "
                   "its variants are skipped. Run tools/setup-deps to fetch Debian 13's glslang.")
  endif()
endforeach()

# Parse the variant table.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_shader_dir}/variants.def")
file(STRINGS "${_shader_dir}/variants.def" _lines REGEX "^VKPT_VARIANT\\(")
file(GLOB _common_headers CONFIGURE_DEPENDS "${_shader_dir}/common/*")

set(VKPT_SHADER_SOURCES "")
set(_table "/* generated from shaders/variants.def by cmake/Shaders.cmake; do not edit */\n")
string(APPEND _table "#include \"vk_int.h\"\n\n")
set(_entries "")
set(_n_ok 0)
set(_n_skip 0)
foreach(line ${_lines})
  if(NOT line MATCHES "^VKPT_VARIANT\\(([a-z0-9_]+), *([A-Za-z0-9_.]+), *([A-Z0-9_]+), *([^,]+), *\"([^\"]*)\"\\)")
    message(FATAL_ERROR "shaders/variants.def: cannot parse: ${line}")
  endif()
  set(name "${CMAKE_MATCH_1}")
  set(src "${CMAKE_MATCH_2}")
  set(tier "${CMAKE_MATCH_3}")
  set(req "${CMAKE_MATCH_4}")
  set(defs "${CMAKE_MATCH_5}")
  if(NOT DEFINED _tier_${tier})
    message(FATAL_ERROR "shaders/variants.def: ${name}: unknown tier ${tier}")
  endif()
  set(tc "${_tier_${tier}}")
  if(NOT tc)
    math(EXPR _n_skip "${_n_skip} + 1")
    string(APPEND _entries "    {\"${name}\", \"${src}\", \"${tier}\", ${req}, NULL},\n")
    continue()
  endif()
  set(env "${_tier_env_${tier}}")
  set(dflags "")
  separate_arguments(_dl UNIX_COMMAND "${defs}")
  foreach(d ${_dl})
    list(APPEND dflags "-D${d}")
  endforeach()
  set(raw "${_gen_dir}/${name}.raw.spv")
  set(spv "${_gen_dir}/${name}.spv")
  set(out "${_gen_dir}/spv_${name}.c")
  add_custom_command(
    OUTPUT "${raw}"
    COMMAND "${_tc_${tc}_glslang}" -V --target-env ${env} ${dflags} "-I${_shader_dir}/common"
            --depfile "${raw}.d" -o "${raw}" "${_shader_dir}/${src}"
    DEPENDS "${_shader_dir}/${src}" ${_common_headers}
    DEPFILE "${raw}.d"
    COMMENT "glslang ${name}"
    VERBATIM)
  add_custom_command(
    OUTPUT "${out}"
    COMMAND "${_tc_${tc}_opt}" -O "${raw}" -o "${spv}"
    COMMAND "${_tc_${tc}_val}" --target-env ${env} "${spv}"
    COMMAND vkpt_spv2c "${spv}" "${name}" "${out}"
    DEPENDS "${raw}" vkpt_spv2c
    COMMENT "spirv-opt/val/embed ${name}"
    VERBATIM)
  list(APPEND VKPT_SHADER_SOURCES "${out}")
  string(APPEND _table "extern const vkpt_spv_blob vkpt_spv_${name};\n")
  string(APPEND _entries "    {\"${name}\", \"${src}\", \"${tier}\", ${req}, &vkpt_spv_${name}},\n")
  math(EXPR _n_ok "${_n_ok} + 1")
endforeach()
string(APPEND _table "\nconst vkpt_variant vkpt_variants[VKPT_V_COUNT] = {\n${_entries}};\n")
file(CONFIGURE OUTPUT "${_gen_dir}/variants_table.c" CONTENT "${_table}" @ONLY)
list(APPEND VKPT_SHADER_SOURCES "${_gen_dir}/variants_table.c")
message(STATUS "vkpt shaders: ${_n_ok} variants compiled, ${_n_skip} skipped")
